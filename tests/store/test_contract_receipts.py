"""ReceiptStore on every store: receipts move recipients up the order of states, are kept
for messages not recorded yet (within a ttl and a cap), and belong to their gateway."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.store.base import ReceiptReport, Store
from tests.store.helpers import make_world, message, new_run, reserve, states, wall_clock

pytestmark = pytest.mark.anyio


class Run:
    """A run on a store, and a way to record one message at a time as a dispatcher does."""

    def __init__(self, store: Store, run_id: int, profile_id: int) -> None:
        self.store, self.run_id, self.profile_id = store, run_id, profile_id
        self.seq = 0

    async def record(self, provider_id: str | None, state: str = "sent", *,
                     sender: str = "s", **outcome: Any) -> int:
        """Reserve and record one message; its seq."""
        self.seq += 1
        m: Message = message(self.seq, self.profile_id, f"+4479{self.seq:08d}", sender)
        await reserve(self.store, self.run_id, [(self.seq, sender, [m])])
        await self.store.record(self.run_id, self.seq, sender, [m],
                                [Outcome(self.seq, state, provider_id=provider_id, **outcome)])
        return self.seq

    async def apply(self, receipts: Sequence[Receipt], *, gateway: str = "gw",
                    senders: Sequence[str] = ("s",), **options: Any) -> ReceiptReport:
        return await self.store.apply_receipts(gateway, receipts, senders=senders, **options)

    async def state(self, seq: int) -> str:
        return (await states(self.store, self.run_id))[seq]


@pytest.fixture
async def run(store: Store) -> Run:
    w = await make_world(store, 1)
    _, r = await new_run(store, w)
    return Run(store, r.id, w.ids[0])


@pytest.mark.parametrize(("start", "receipt", "end"), [
    ("sent", "delivered", "delivered"),
    ("sent", "undelivered", "undelivered"),
    ("unknown", "delivered", "delivered"),
    ("failed", "delivered", "failed"),
])
async def test_a_receipt_moves_its_recipient_only_up_the_order(
    run: Run, start: str, receipt: str, end: str
) -> None:
    seq = await run.record("p", start)
    report = await run.apply([Receipt("p", receipt)], now=wall_clock())  # type: ignore[arg-type]
    moved = start != end
    assert report == ReceiptReport(matched=int(moved), pending=0, ignored=int(not moved))
    assert await run.state(seq) == end


async def test_a_delivery_is_never_taken_back(run: Run) -> None:
    seq = await run.record("p")
    now = wall_clock()
    assert (await run.apply([Receipt("p", "undelivered")], now=now)).matched == 1
    assert (await run.apply([Receipt("p", "delivered")], now=now + 1)).matched == 1
    again = await run.apply([Receipt("p", "undelivered"), Receipt("p", "delivered")],
                            now=now + 2)
    assert again == ReceiptReport(matched=0, pending=0, ignored=2)
    assert await run.state(seq) == "delivered"


async def test_receipts_in_one_call_apply_in_the_order_they_happened(run: Run) -> None:
    seq = await run.record("p")
    now = wall_clock()
    report = await run.apply([Receipt("p", "delivered", at=now - 10),
                              Receipt("p", "undelivered", at=now - 20)], now=now)
    assert (report.matched, report.ignored) == (2, 0)
    assert await run.state(seq) == "delivered"


async def test_a_receipt_before_its_message_is_applied_when_it_is_recorded(run: Run) -> None:
    report = await run.apply([Receipt("early", "delivered")], now=wall_clock())
    assert report == ReceiptReport(matched=0, pending=1, ignored=0)
    seq = await run.record("early")
    assert await run.state(seq) == "delivered"
    # applied once: a second message with that id is not moved by it
    other = await run.record("early")
    assert await run.state(other) == "sent"


async def test_an_early_receipt_obeys_the_order_too(run: Run) -> None:
    now = wall_clock()
    # kept: undelivered, then replaced by the later delivery; not the other way round
    report = await run.apply([Receipt("p", "undelivered"), Receipt("q", "delivered")], now=now)
    assert report.pending == 2
    report = await run.apply([Receipt("p", "delivered"), Receipt("q", "undelivered")],
                             now=now + 1)
    assert (report.pending, report.ignored) == (1, 1)
    p, q = await run.record("p"), await run.record("q")
    assert (await run.state(p), await run.state(q)) == ("delivered", "delivered")
    # a message the gateway refused after all is not delivered by an early receipt
    await run.apply([Receipt("r", "delivered")], now=now + 2)
    r = await run.record("r", "failed", reason="rejected")
    assert await run.state(r) == "failed"


async def test_kept_receipts_wait_no_longer_than_the_ttl(run: Run) -> None:
    now = wall_clock()
    await run.apply([Receipt("old", "delivered")], ttl=100, now=now - 50)
    await run.apply([Receipt("young", "delivered")], ttl=100, now=now - 10)
    # a later call drops those that waited longer than its ttl
    report = await run.apply([], ttl=30, now=now)
    assert report == ReceiptReport(0, 0, 0)
    old, young = await run.record("old"), await run.record("young")
    assert (await run.state(old), await run.state(young)) == ("sent", "delivered")


async def test_record_honours_the_expiry_a_receipt_got_on_arrival(run: Run) -> None:
    now = wall_clock()
    await run.apply([Receipt("stale", "delivered")], ttl=60, now=now - 3600)
    await run.apply([Receipt("fresh", "delivered")], ttl=3600, now=now - 60)
    stale, fresh = await run.record("stale"), await run.record("fresh")
    assert (await run.state(stale), await run.state(fresh)) == ("sent", "delivered")


async def test_past_the_cap_the_oldest_kept_receipts_go(run: Run) -> None:
    now = wall_clock()
    for i, pid in enumerate(["a", "b", "c"]):
        report = await run.apply([Receipt(pid, "delivered")], cap=2, now=now + i)
        assert (report.pending, report.dropped) == (1, int(pid == "c"))
    # another gateway's kept receipts do not count toward this one's cap
    other = await run.apply([Receipt("x", "delivered")], gateway="gw2", senders=["t"],
                            cap=2, now=now + 3)
    assert other.dropped == 0
    a, b, c = await run.record("a"), await run.record("b"), await run.record("c")
    assert [await run.state(s) for s in (a, b, c)] == ["sent", "delivered", "delivered"]
    unlimited = await run.apply([Receipt(f"u{i}", "delivered") for i in range(5)],
                                cap=0, now=now + 4)
    assert (unlimited.pending, unlimited.dropped) == (5, 0)


async def test_a_gateways_receipts_move_only_its_own_senders_recipients(run: Run) -> None:
    now = wall_clock()
    ours = await run.record("p", sender="s")
    theirs = await run.record("p", sender="t")  # the same provider id at another gateway
    report = await run.apply([Receipt("p", "delivered")], gateway="gw", senders=["s"], now=now)
    assert report.matched == 1
    assert (await run.state(ours), await run.state(theirs)) == ("delivered", "sent")
    # a receipt of gw2 for an id only gw has is kept for gw2, not applied to gw's
    report = await run.apply([Receipt("q", "delivered")], gateway="gw2", senders=["t"],
                             now=now)
    assert report.pending == 1
    ours_q = await run.record("q", sender="s")
    theirs_q = await run.record("q", sender="t")
    assert (await run.state(ours_q), await run.state(theirs_q)) == ("sent", "delivered")


async def test_a_sender_belongs_to_the_gateway_whose_receipts_named_it_last(
    run: Run,
) -> None:
    now = wall_clock()
    await run.apply([], gateway="old", senders=["s"], now=now)
    await run.apply([], gateway="new", senders=["s"], now=now)
    await run.apply([Receipt("p", "delivered")], gateway="old", senders=[], now=now)
    await run.apply([Receipt("q", "delivered")], gateway="new", senders=["s"], now=now)
    p, q = await run.record("p", sender="s"), await run.record("q", sender="s")
    assert (await run.state(p), await run.state(q)) == ("sent", "delivered")


async def test_a_big_callback_is_counted_whole(run: Run) -> None:
    store, n = run.store, 1200
    msgs = [message(i, run.profile_id, f"+4478{i:08d}") for i in range(1, n + 1)]
    await reserve(store, run.run_id, [(1, "s", msgs)])
    await store.record(run.run_id, 1, "s", msgs,
                       [Outcome(m.seq, "sent", provider_id=f"big-{m.seq}") for m in msgs])
    receipts = [Receipt(f"big-{i}", "delivered") for i in range(1, n + 1)]
    receipts += [Receipt(f"big-{i}", "undelivered") for i in range(1, 11)]  # too late
    receipts += [Receipt(f"none-{i}", "delivered") for i in range(7)]
    report = await run.apply(receipts, now=wall_clock())
    assert report == ReceiptReport(matched=n, pending=7, ignored=10)
    summary = await store.run_summary(run.run_id)
    assert summary == {"delivered": {"": n}}
