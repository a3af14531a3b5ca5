"""The hot path's writes on every store, beyond the journal's contract: what ``reserve``
counts and remembers, what receipts do before and after their message is recorded, and
what holds when several tasks write at once (PostgreSQL awaits inside every call)."""

from __future__ import annotations

import anyio
import pytest

from engine.core.policy import Policy
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.errors import StoreError
from engine.store.base import ReceiptReport, Store
from tests.store.helpers import (
    make_world,
    message,
    messages,
    new_run,
    phone,
    reserve,
    sent,
    states,
    wall_clock,
)

pytestmark = pytest.mark.anyio

TTL = 3600.0


async def errors(store: Store, run_id: int) -> dict[int, tuple[str, str | None]]:
    """(state, reason) by seq: what a receipt leaves readable through the protocol."""
    return {r.seq: (r.state, r.reason) for r in await store.recipient_rows(run_id)}


async def test_reserve_counts_every_message_in_the_policy_history(store: Store) -> None:
    w = await make_world(store, 3)
    _, run = await new_run(store, w)
    a, b = w.ids[0], w.ids[1]
    # profile a twice in one batch and once more in another batch of the same reserve
    await reserve(store, run.id, [
        (1, "s", [message(1, a, w.phones[0]), message(2, a, w.phones[0]),
                  message(3, b, w.phones[1])]),
        (2, "s", [message(4, a, w.phones[0])]),
    ])
    await reserve(store, run.id, [(3, "s", [message(5, b, w.phones[1])])])
    now = wall_clock()
    per_profile = Policy(max_messages=5, period_days=1)
    assert await store.policy_counts(per_profile, w.resource_id, w.ids, now) == {a: 3, b: 2}
    per_phone = Policy(max_messages=5, period_days=1, scope="contact")
    assert await store.policy_counts(per_phone, w.resource_id, w.phones, now) == {
        w.phones[0]: 3, w.phones[1]: 2}
    # counted for the run's resource only
    other = await store.resource_id("other")
    scoped = Policy(max_messages=5, period_days=1, scope="profile_resource")
    assert await store.policy_counts(scoped, other, w.ids, now) == {}
    assert await store.policy_counts(scoped, w.resource_id, w.ids, now) == {a: 3, b: 2}


async def test_reserved_phones_are_the_runs_exact_dedupe_record(store: Store) -> None:
    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    _, other = await new_run(store, w, name="other")
    await reserve(store, run.id, [(1, "s", messages(w, [1, 2]))])
    await store.record(run.id, 1, "s", messages(w, [1]), sent(messages(w, [1])),
                       keep=messages(w, [2]))
    await reserve(store, run.id, [(2, "s", messages(w, [3]))])
    _, seen = await store.lookup(run.id, [], w.phones)
    assert seen == set(w.phones[:3])  # recorded, kept in the journal, or just reserved
    assert (await store.lookup(other.id, [], w.phones))[1] == set()


async def test_a_receipt_that_comes_first_is_applied_when_its_message_is_recorded(
    store: Store,
) -> None:
    w = await make_world(store, 3)
    _, run = await new_run(store, w)
    now = wall_clock()
    report = await store.apply_receipts(
        "gw", [Receipt("p1", "undelivered", error="absent"), Receipt("p2", "delivered"),
               Receipt("p3", "delivered")],
        senders=["s"], ttl=TTL, now=now)
    assert report == ReceiptReport(0, 3, 0)
    msgs = messages(w, [1, 2])
    await store.record(run.id, 1, "s", msgs, [Outcome(1, "sent", provider_id="p1"),
                                              Outcome(2, "failed", "rejected", "p2")])
    # p1 moves; p2's message failed, which no receipt moves; both are dropped
    assert await errors(store, run.id) == {1: ("undelivered", None), 2: ("failed", "rejected")}
    # p3 went to a sender of another gateway: that gateway's recipients are not gw's
    third = messages(w, [3], sender="t")
    await store.record(run.id, 2, "t", third, [Outcome(3, "sent", provider_id="p3")])
    assert (await states(store, run.id))[3] == "sent"
    # kept receipts were dropped when applied: a second delivery of p1 applies directly
    assert await store.apply_receipts(
        "gw", [Receipt("p1", "delivered")], senders=["s"], ttl=TTL, now=now + 1,
    ) == ReceiptReport(1, 0, 0)
    assert (await states(store, run.id))[1] == "delivered"


async def test_an_expired_early_receipt_moves_nothing(store: Store) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    long_ago = wall_clock() - 2 * TTL
    await store.apply_receipts("gw", [Receipt("p1", "delivered")], senders=["s"], ttl=TTL,
                               now=long_ago)
    msgs = messages(w, [1])
    await store.record(run.id, 1, "s", msgs, [Outcome(1, "sent", provider_id="p1")])
    assert await states(store, run.id) == {1: "sent"}


async def test_receipts_apply_in_order_of_their_time_across_chunks(store: Store) -> None:
    n = 1100  # more than a chunk (500 on both stores)
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    msgs = [message(i, w.ids[0], w.phones[0]) for i in range(1, n + 1)]
    await store.record(run.id, 1, "s", msgs, sent(msgs))
    t = wall_clock()
    # each message's delivery comes before its earlier non-delivery, and far from it
    receipts = [Receipt(f"prov-{i}", "delivered", at=t + i) for i in range(1, n + 1)]
    receipts += [Receipt(f"prov-{i}", "undelivered", error="e", at=t - i)
                 for i in range(1, n + 1)]
    report = await store.apply_receipts("gw", receipts, senders=["s"], now=t + n + 1)
    assert report == ReceiptReport(2 * n, 0, 0)
    assert set((await states(store, run.id)).values()) == {"delivered"}
    # the same again moves nothing
    again = await store.apply_receipts("gw", receipts, senders=["s"], now=t + n + 2)
    assert again == ReceiptReport(0, 0, 2 * n)


async def test_kept_receipts_past_the_cap_are_dropped_oldest_first(store: Store) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    t = wall_clock()
    for i in range(1, 6):
        report = await store.apply_receipts(
            "gw", [Receipt(f"p{i}", "delivered")], senders=["s"], cap=3, ttl=TTL, now=t + i)
        assert report == ReceiptReport(0, 1, 0, 1 if i > 3 else 0)
    # another gateway's kept receipts count under its own cap
    assert await store.apply_receipts(
        "other", [Receipt("p9", "delivered")], senders=["t"], cap=3, ttl=TTL, now=t + 6,
    ) == ReceiptReport(0, 1, 0, 0)
    msgs = [message(i, w.ids[0], w.phones[0]) for i in range(1, 6)]
    await store.record(run.id, 1, "s", msgs,
                       [Outcome(i, "sent", provider_id=f"p{i}") for i in range(1, 6)])
    assert await states(store, run.id) == {
        1: "sent", 2: "sent", 3: "delivered", 4: "delivered", 5: "delivered"}


async def test_a_kept_receipt_is_replaced_only_by_one_it_could_move_to(store: Store) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    t = wall_clock()
    first = await store.apply_receipts(
        "gw", [Receipt("p1", "delivered", at=t), Receipt("p2", "undelivered", "x", at=t)],
        senders=["s"], ttl=TTL, now=t)
    later = await store.apply_receipts(
        "gw", [Receipt("p1", "undelivered", "late", at=t + 1),
               Receipt("p2", "delivered", at=t + 1)],
        senders=["s"], ttl=TTL, now=t + 1)
    assert (first, later) == (ReceiptReport(0, 2, 0), ReceiptReport(0, 1, 1))
    msgs = messages(w, [1, 2])
    await store.record(run.id, 1, "s", msgs, [Outcome(1, "sent", provider_id="p1"),
                                              Outcome(2, "sent", provider_id="p2")])
    got = await states(store, run.id)
    assert (got[1], got[2]) == ("delivered", "delivered")


async def test_records_and_receipts_at_once_lose_no_receipt(store: Store) -> None:
    """Receipts racing their message's record end applied, whichever commits first."""
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    size, rounds = 20, 20

    async def record(batch: int) -> None:
        msgs = [message(batch * size + i, w.ids[0], w.phones[0]) for i in range(size)]
        await store.record(run.id, batch, "s", msgs, sent(msgs))

    async def receipts(batch: int) -> None:
        ids = [f"prov-{batch * size + i}" for i in range(size)]
        await store.apply_receipts("gw", [Receipt(i, "delivered") for i in ids],
                                   senders=["s"], ttl=TTL)

    for batch in range(1, rounds + 1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receipts, batch)
            tg.start_soon(record, batch)
    final = await states(store, run.id)
    assert len(final) == size * rounds
    assert set(final.values()) == {"delivered"}


async def test_runs_reserving_the_same_profiles_at_once_count_them_all(store: Store) -> None:
    w = await make_world(store, 50)
    runs = [(await new_run(store, w, name=f"m{i}"))[1] for i in range(4)]

    async def fill(run_id: int) -> None:
        for batch in range(1, 6):
            # the same profiles, in an order of the run's own: no deadlock between runs
            order = w.ids[::-1] if run_id % 2 else w.ids
            msgs = [message((batch - 1) * 50 + i + 1, pid, phone(pid)) for i, pid in
                    enumerate(order)]
            await reserve(store, run_id, [(batch, "s", msgs)], counts={"reserved": 50})

    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(fill, run.id)
    counts = await store.policy_counts(Policy(max_messages=5, period_days=1), w.resource_id,
                                       w.ids, wall_clock())
    assert counts == {pid: 4 * 5 for pid in w.ids}
    for run in runs:
        assert (await store.get_run(run.id))[1].counts == {"reserved": 250}
        assert len(await store.journal(run.id)) == 5


async def test_two_claims_of_a_stopped_run_let_one_through(store: Store) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    await store.set_run_status(run.id, "interrupted")
    outcomes: list[str] = []

    async def claim() -> None:
        try:
            await store.claim_run(run.id)
            outcomes.append("claimed")
        except StoreError as err:
            outcomes.append(str(err))

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim)
        tg.start_soon(claim)
    assert sorted(outcomes) == ["claimed", f"run {run.id} is still running "
                                f"(pid {run.pid} on {run.host})"]
