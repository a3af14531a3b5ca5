"""JournalStore on every store: what a run reserves, what may be at a gateway, what is
recorded, and what is left to resume or cancel after a crash."""

from __future__ import annotations

import pytest

from engine.core.prepare import Skipped
from engine.core.states import Outcome
from engine.store.base import JournalBatch, RecipientRow, Reserved, Store
from tests.store.helpers import make_world, messages, new_run, reserve, sent, shape, states

pytestmark = pytest.mark.anyio


async def test_reserve_journals_batches_records_skips_and_moves_the_run_on(
    store: Store,
) -> None:
    w = await make_world(store, 6)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3])
    await reserve(
        store, run.id, [(1, "a", msgs[:2]), (2, "b", msgs[2:])],
        skipped=[Skipped(4, w.ids[3], w.phones[3], "suppressed")],
        checkpoint=w.ids[3], next_seq=5, counts={"found": 4, "reserved": 3, "suppressed": 1},
    )
    journal = await store.journal(run.id)
    assert journal == [
        JournalBatch(run.id, 1, "a", "reserved", [Reserved(1, w.ids[0], w.phones[0]),
                                                  Reserved(2, w.ids[1], w.phones[1])]),
        JournalBatch(run.id, 2, "b", "reserved", [Reserved(3, w.ids[2], w.phones[2])]),
    ]
    assert await store.recipient_rows(run.id) == [
        RecipientRow(4, w.ids[3], w.phones[3], "skipped", "suppressed")]
    _, now = await store.get_run(run.id)
    assert (now.checkpoint, now.next_seq, now.audience_done) == (w.ids[3], 5, False)
    assert now.counts == {"found": 4, "reserved": 3, "suppressed": 1}
    # the counters add up; next_seq None leaves it; the end of the audience is said once
    more = messages(w, [5])
    await reserve(store, run.id, [(3, "a", more)], checkpoint=w.ids[5], next_seq=None,
                  counts={"found": 2, "reserved": 1, "duplicate": 1}, audience_done=True,
                  skipped=[Skipped(6, w.ids[5], w.phones[0], "duplicate")])
    _, now = await store.get_run(run.id)
    assert (now.checkpoint, now.next_seq, now.audience_done) == (w.ids[5], 5, True)
    assert now.counts == {"found": 6, "reserved": 4, "suppressed": 1, "duplicate": 1}
    assert [b.batch for b in await store.journal(run.id)] == [1, 2, 3]


async def test_an_empty_reserve_only_moves_the_checkpoint(store: Store) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    await reserve(store, run.id, [], checkpoint=2**63 - 1, next_seq=7, audience_done=True)
    _, now = await store.get_run(run.id)
    assert (now.checkpoint, now.next_seq, now.audience_done, now.counts) == (
        2**63 - 1, 7, True, {})
    assert await store.journal(run.id) == []
    assert await store.recipient_rows(run.id) == []


async def test_mark_and_unmark_sending(store: Store) -> None:
    w = await make_world(store, 3)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3])
    await reserve(store, run.id, [(1, "a", msgs[:1]), (2, "a", msgs[1:])])
    await store.mark_sending(run.id, 2)
    await store.mark_sending(run.id, 2)  # a retry marks again: harmless
    assert [(b.batch, b.state) for b in await store.journal(run.id)] == [
        (1, "reserved"), (2, "sending")]
    await store.unmark_sending(run.id, 2)
    await store.unmark_sending(run.id, 2)
    assert [(b.batch, b.state) for b in await store.journal(run.id)] == [
        (1, "reserved"), (2, "reserved")]


async def test_move_batch_changes_the_sender_and_keeps_the_messages(store: Store) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    await reserve(store, run.id, [(1, "a", messages(w, [1, 2], "a"))])
    await store.mark_sending(run.id, 1)
    await store.move_batch(run.id, 1, "b")
    assert shape(await store.journal(run.id)) == [(1, "b", "sending", [1, 2])]


async def test_record_writes_the_outcomes_and_drops_the_batch(store: Store) -> None:
    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3, 4])
    await reserve(store, run.id, [(1, "s", msgs[:3]), (2, "s", msgs[3:])])
    await store.mark_sending(run.id, 1)
    await store.record(run.id, 1, "s", msgs[:3], [
        Outcome(1, "sent", provider_id="p-1"),
        Outcome(2, "failed", "rejected", error="bad number", attempts=2),
        Outcome(3, "unknown", "timeout", error="no answer"),
    ])
    assert shape(await store.journal(run.id)) == [(2, "s", "reserved", [4])]
    assert await store.recipient_rows(run.id) == [
        RecipientRow(1, w.ids[0], w.phones[0], "sent", None),
        RecipientRow(2, w.ids[1], w.phones[1], "failed", "rejected"),
        RecipientRow(3, w.ids[2], w.phones[2], "unknown", "timeout"),
    ]
    await store.record(run.id, 2, "s", msgs[3:], sent(msgs[3:]))
    assert await store.journal(run.id) == []
    assert await store.run_summary(run.id) == {
        "sent": {"": 2}, "failed": {"rejected": 1}, "unknown": {"timeout": 1}}


async def test_record_with_keep_leaves_the_rest_reserved(store: Store) -> None:
    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3, 4], "a")
    await reserve(store, run.id, [(1, "a", msgs)])
    await store.mark_sending(run.id, 1)
    # stopped between two parts: the first part is settled (by the sender it failed over
    # to), the rest was never handed over
    await store.record(run.id, 1, "b", msgs[:2], sent(msgs[:2]), keep=msgs[2:])
    assert shape(await store.journal(run.id)) == [(1, "b", "reserved", [3, 4])]
    assert await states(store, run.id) == {1: "sent", 2: "sent"}
    await store.record(run.id, 1, "b", msgs[2:], sent(msgs[2:]))
    assert await store.journal(run.id) == []
    assert await states(store, run.id) == {1: "sent", 2: "sent", 3: "sent", 4: "sent"}


async def test_record_with_keep_sending_leaves_the_rest_in_doubt(store: Store) -> None:
    w = await make_world(store, 3)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3])
    await reserve(store, run.id, [(1, "s", msgs)])
    await store.mark_sending(run.id, 1)
    await store.record(run.id, 1, "s", msgs[:1], sent(msgs[:1]), keep=msgs[1:],
                       keep_sending=True)
    assert shape(await store.journal(run.id)) == [(1, "s", "sending", [2, 3])]
    # nothing kept: keep_sending has nothing to keep marked
    await store.record(run.id, 1, "s", msgs[1:], sent(msgs[1:]), keep_sending=True)
    assert await store.journal(run.id) == []


async def test_the_journal_survives_a_crash(store: Store, store_url: str) -> None:
    from engine.store.open import open_store

    w = await make_world(store, 5)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3, 4, 5])
    await reserve(store, run.id, [(1, "a", msgs[:2]), (2, "a", msgs[2:4]), (3, "b", msgs[4:])],
                  checkpoint=w.ids[4], next_seq=6, counts={"reserved": 5})
    await store.mark_sending(run.id, 1)
    await store.mark_sending(run.id, 2)
    await store.record(run.id, 1, "a", msgs[:2], sent(msgs[:2]))
    # the process dies here: another one opens the same database to resume
    again = await open_store(store_url)
    try:
        assert shape(await again.journal(run.id)) == [
            (2, "a", "sending", [3, 4]), (3, "b", "reserved", [5])]
        _, after = await again.get_run(run.id)
        assert (after.status, after.checkpoint, after.next_seq) == ("running", w.ids[4], 6)
        assert await states(again, run.id) == {1: "sent", 2: "sent"}
    finally:
        await again.aclose()


async def test_recipient_phones_yields_the_non_skipped_in_chunks(store: Store) -> None:
    w = await make_world(store, 7)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3, 4, 5])
    await reserve(store, run.id, [(1, "s", msgs)],
                  skipped=[Skipped(6, w.ids[5], w.phones[5], "invalid_phone"),
                           Skipped(7, w.ids[6], w.phones[6], "duplicate")])
    outcomes = [*sent(msgs[:4]), Outcome(5, "failed", "rejected")]
    await store.record(run.id, 1, "s", msgs, outcomes)
    chunks = [c async for c in store.recipient_phones(run.id, chunk=2)]
    assert chunks == [w.phones[0:2], w.phones[2:4], w.phones[4:5]]
    assert [c async for c in store.recipient_phones(run.id + 100)] == []


async def test_run_summary_counts_by_state_and_reason(store: Store) -> None:
    w = await make_world(store, 5)
    _, run = await new_run(store, w)
    _, other = await new_run(store, w, name="other")
    msgs = messages(w, [1, 2, 3])
    await reserve(store, run.id, [(1, "s", msgs)],
                  skipped=[Skipped(4, w.ids[3], w.phones[3], "duplicate"),
                           Skipped(5, w.ids[4], w.phones[4], "policy")])
    await store.record(run.id, 1, "s", msgs, [*sent(msgs[:2]), Outcome(3, "failed", "rejected")])
    assert await store.run_summary(run.id) == {
        "sent": {"": 2}, "failed": {"rejected": 1}, "skipped": {"duplicate": 1, "policy": 1}}
    assert await store.run_summary(other.id) == {}


async def test_cancel_run_settles_the_journal_for_good(store: Store) -> None:
    w = await make_world(store, 5)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3, 4, 5])
    await reserve(store, run.id, [(1, "a", msgs[:2]), (2, "a", msgs[2:4]), (3, "b", msgs[4:])])
    await store.record(run.id, 1, "a", msgs[:2], sent(msgs[:2]))
    await store.mark_sending(run.id, 2)  # may be at its gateway
    await store.set_run_status(run.id, "interrupted")
    await store.cancel_run(run.id)
    assert await store.journal(run.id) == []
    rows = await store.recipient_rows(run.id)
    assert [(r.seq, r.profile_id, r.phone, r.state, r.reason) for r in rows] == [
        (1, w.ids[0], w.phones[0], "sent", None),
        (2, w.ids[1], w.phones[1], "sent", None),
        (3, w.ids[2], w.phones[2], "unknown", "interrupted"),
        (4, w.ids[3], w.phones[3], "unknown", "interrupted"),
        (5, w.ids[4], w.phones[4], "skipped", "cancelled"),
    ]
    _, now = await store.get_run(run.id)
    assert (now.status, now.audience_done) == ("cancelled", True)
    assert now.finished_at is not None
    # a cancelled run's phones still count for dedupe, except the skipped one
    assert [p for c in [c async for c in store.recipient_phones(run.id)] for p in c] == (
        w.phones[:4])
