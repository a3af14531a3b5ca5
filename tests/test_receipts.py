"""Delivery receipts on a real store: the order of states, errors, early receipts, their ttl."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.errors import InputError
from engine.store.base import ReceiptReport
from engine.store.models import AudienceSource
from engine.store.sqlite import RECEIPT_CHUNK, SQLiteStore
from engine.store.sqlite.schema import MIGRATIONS

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
TTL = 3600.0


class Workspace:
    """A store with one run, and a way to record its messages as a dispatcher would."""

    def __init__(self, store: SQLiteStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.seq = 0

    async def record(self, provider_id: str, state: str = "sent", *, sender: str = "s",
                     **outcome: Any) -> None:
        self.seq += 1
        message = Message(self.seq, f"r-{self.seq}", self.seq, f"+4479000000{self.seq:02d}",
                          sender, "x", 1)
        await self.store.record(self.run_id, self.seq, sender, [message],
                                [Outcome(self.seq, state, provider_id=provider_id, **outcome)])

    async def apply(self, receipts: Sequence[Receipt], **options: Any) -> ReceiptReport:
        """Apply receipts of gateway ``gw``, whose one sender is ``s``."""
        return await self.store.apply_receipts("gw", receipts, senders=["s"], **options)

    def recipient(self, provider_id: str, sender: str = "s") -> tuple[str, str | None]:
        """(state, error) of the recipient of ``sender`` the provider id names."""
        row = self.store.conn.execute(
            "SELECT state, error FROM recipients WHERE provider_id = ? AND sender = ?",
            (provider_id, sender),
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    def waiting(self, gateway: str = "gw") -> dict[str, str]:
        """The receipts of ``gateway`` kept for a message not recorded yet, by provider id."""
        return dict(self.store.conn.execute(
            "SELECT provider_id, status FROM receipts_pending WHERE gateway = ?", (gateway,)))


@pytest.fixture
async def ws(tmp_path: Path) -> AsyncIterator[Workspace]:
    store = SQLiteStore.open(tmp_path / "herald.db")
    source = AudienceSource("list", store.database_id_sync("main", create=True))
    _, run = await store.create_run(name="t", resource="news", source=source, template="x",
                                    limit=None)
    yield Workspace(store, run.id)
    await store.aclose()


# -- the order of states -----------------------------------------------------------------


async def reach(ws: Workspace, state: str) -> None:
    """Record message ``p`` and bring it to ``state`` the way it happens in use."""
    if state in ("delivered", "undelivered"):
        await ws.record("p")
        await ws.apply([Receipt("p", state, error="first")])  # type: ignore[arg-type]
    elif state == "failed":
        await ws.record("p", "failed", error="rejected")
    elif state == "skipped":
        await ws.record("p", "skipped", reason="cancelled")
    else:
        await ws.record("p", state)


@pytest.mark.parametrize(("start", "receipt", "end", "error", "moved"), [
    ("sent", "delivered", "delivered", None, True),
    ("sent", "undelivered", "undelivered", "absent", True),
    ("unknown", "delivered", "delivered", None, True),  # a receipt settles an unknown
    ("unknown", "undelivered", "undelivered", "absent", True),
    ("undelivered", "delivered", "delivered", None, True),  # a late delivery is real
    ("undelivered", "undelivered", "undelivered", "first", False),  # same twice: no change
    ("delivered", "undelivered", "delivered", "first", False),  # never taken back
    ("delivered", "delivered", "delivered", "first", False),
    ("failed", "delivered", "failed", "rejected", False),
    ("failed", "undelivered", "failed", "rejected", False),
    ("skipped", "delivered", "skipped", None, False),
    ("skipped", "undelivered", "skipped", None, False),
])
async def test_a_receipt_moves_its_recipient_only_up_the_order(
    ws: Workspace, start: str, receipt: str, end: str, error: str | None, moved: bool
) -> None:
    await reach(ws, start)
    # the receipt's error only where it is the state reached's: a delivery has none here
    given = "absent" if receipt == "undelivered" else None
    report = await ws.apply([Receipt("p", receipt, error=given)])  # type: ignore[arg-type]
    assert (report.matched, report.pending, report.ignored) == (int(moved), 0, int(not moved))
    assert ws.recipient("p") == (end, error)


async def test_a_late_delivery_clears_the_undelivered_error(ws: Workspace) -> None:
    await ws.record("p")
    await ws.record("q")
    await ws.apply([Receipt("p", "undelivered", error="absent"),
                                   Receipt("q", "undelivered", error="absent")])
    await ws.apply([Receipt("p", "delivered"),
                                   Receipt("q", "delivered", error="delivered late")])
    assert ws.recipient("p") == ("delivered", None)
    assert ws.recipient("q") == ("delivered", "delivered late")  # the receipt's own error


async def test_the_same_receipt_twice_changes_nothing(ws: Workspace) -> None:
    await ws.record("p")
    receipt = Receipt("p", "undelivered", error="absent", at=T0)
    assert (await ws.apply([receipt])).matched == 1
    again = await ws.apply([receipt], now=T0 + 60)
    assert (again.matched, again.ignored) == (0, 1)
    updated = ws.store.conn.execute("SELECT updated_at FROM recipients").fetchone()
    assert ws.recipient("p") == ("undelivered", "absent") and updated == (T0,)


# -- several receipts for one message -------------------------------------------------------


async def test_receipts_in_one_call_are_applied_in_the_order_they_happened(
    ws: Workspace,
) -> None:
    await ws.record("p")
    # the gateway posts the delivery first, though the failed attempt came before it
    report = await ws.apply([
        Receipt("p", "delivered", at=T0 + 20),
        Receipt("p", "undelivered", error="absent", at=T0 + 10),
    ])
    assert (report.matched, report.ignored) == (2, 0)
    assert ws.recipient("p") == ("delivered", None)


async def test_receipts_without_times_are_applied_in_the_order_received(
    ws: Workspace,
) -> None:
    await ws.record("p")
    await ws.record("q")
    report = await ws.apply([
        Receipt("p", "delivered"), Receipt("p", "undelivered", error="absent"),
        Receipt("q", "undelivered", error="absent"), Receipt("q", "delivered"),
    ])
    assert (report.matched, report.ignored) == (3, 1)
    assert ws.recipient("p") == ("delivered", None)  # the undelivered after it is refused
    assert ws.recipient("q") == ("delivered", None)


async def test_two_early_receipts_for_one_message_keep_the_order(ws: Workspace) -> None:
    report = await ws.apply([
        Receipt("p", "undelivered", error="absent", at=T0 + 10),
        Receipt("p", "delivered", at=T0 + 5),
    ], now=time.time())
    # delivered first; the undelivered after it could not take it back
    assert (report.pending, report.ignored) == (1, 1)
    await ws.record("p")
    assert ws.recipient("p") == ("delivered", None)


# -- receipts that arrive before their message is recorded ---------------------------------


async def test_an_early_receipt_is_applied_when_its_message_is_recorded(
    ws: Workspace,
) -> None:
    report = await ws.apply([Receipt("p", "undelivered", error="absent")])
    assert (report.matched, report.pending, report.ignored) == (0, 1, 0)
    await ws.record("p")
    assert ws.recipient("p") == ("undelivered", "absent")
    assert ws.waiting() == {}


async def test_an_early_receipt_obeys_the_order_when_its_message_is_recorded(
    ws: Workspace,
) -> None:
    await ws.apply([Receipt("p", "delivered")])
    await ws.record("p", "failed", error="rejected")  # the gateway refused it after all
    assert ws.recipient("p") == ("failed", "rejected")
    assert ws.waiting() == {}  # settled: not kept for another message


@pytest.mark.parametrize(("first", "later", "kept", "applied"), [
    ("delivered", "undelivered", "delivered", ("delivered", None)),
    ("undelivered", "delivered", "delivered", ("delivered", None)),
    ("undelivered", "undelivered", "undelivered", ("undelivered", "first")),
])
async def test_a_kept_receipt_is_replaced_only_up_the_order(
    ws: Workspace, first: str, later: str, kept: str, applied: tuple[str, str | None]
) -> None:
    error = "first" if first == "undelivered" else None
    await ws.apply([Receipt("p", first, error=error)])  # type: ignore[arg-type]
    error = "later" if later == "undelivered" else None
    report = await ws.apply([Receipt("p", later, error=error)])  # type: ignore[arg-type]
    replaced = kept == later and first != later
    assert (report.pending, report.ignored) == (int(replaced), int(not replaced))
    assert ws.waiting() == {"p": kept}
    await ws.record("p")
    assert ws.recipient("p") == applied


# -- the ttl of early receipts -------------------------------------------------------------


async def test_an_early_receipt_older_than_the_ttl_is_dropped(ws: Workspace) -> None:
    await ws.apply([Receipt("p", "delivered")], ttl=TTL, now=T0)
    await ws.apply([Receipt("q", "delivered")], ttl=TTL, now=T0 + TTL - 1)
    assert ws.waiting() == {"p": "delivered", "q": "delivered"}
    # any later call drops the receipts that waited longer than the ttl
    await ws.apply([], ttl=TTL, now=T0 + TTL + 1)
    assert ws.waiting() == {"q": "delivered"}


async def test_record_never_applies_an_expired_receipt(ws: Workspace) -> None:
    now = time.time()
    await ws.apply([Receipt("old", "delivered")], ttl=TTL, now=now - TTL - 1)
    await ws.apply([Receipt("new", "delivered")], ttl=TTL, now=now - TTL / 2)
    await ws.record("old")  # no receipts call in between dropped it: record must not apply it
    await ws.record("new")
    assert ws.recipient("old") == ("sent", None)
    assert ws.recipient("new") == ("delivered", None)
    assert ws.waiting() == {}


async def test_a_lowered_ttl_drops_receipts_kept_under_a_longer_one(ws: Workspace) -> None:
    await ws.apply([Receipt("p", "delivered")], ttl=7 * 86400.0, now=T0)
    await ws.apply([], ttl=TTL, now=T0 + TTL + 1)
    assert ws.waiting() == {}


async def test_herald_keeps_early_receipts_for_the_configured_ttl(
    open_herald: Callable[..., Any],
) -> None:
    herald = await open_herald(receipt_ttl=60.0)
    async with herald:
        body = json.dumps({"receipts": [{"provider_id": "p-early", "status": "delivered"}]})
        report = await herald.receipts("gw", body.encode())
        assert report.pending == 1
        (kept,) = herald.store.conn.execute(
            "SELECT expires_at - received_at FROM receipts_pending").fetchone()
    assert kept == pytest.approx(60.0)


# -- receipts belong to their gateway ------------------------------------------------------

#: Gateway ``a`` sends through sender ``sa``, gateway ``b`` through ``sb1`` and ``sb2``.
SENDERS = {"a": ["sa"], "b": ["sb1", "sb2"]}


async def post(ws: Workspace, gateway: str, *receipts: Receipt, **options: Any) -> ReceiptReport:
    return await ws.store.apply_receipts(gateway, receipts, senders=SENDERS[gateway], **options)


async def test_a_receipt_moves_only_its_own_gateways_recipient(ws: Workspace) -> None:
    # both gateways number their messages alike: the same provider id, twice
    await ws.record("42", sender="sa")
    await ws.record("42", sender="sb2")
    report = await post(ws, "b", Receipt("42", "undelivered", error="absent"))
    assert (report.matched, report.ignored) == (1, 0)
    assert ws.recipient("42", "sb2") == ("undelivered", "absent")
    assert ws.recipient("42", "sa") == ("sent", None)


async def test_another_gateways_secret_cannot_move_a_message(ws: Workspace) -> None:
    await ws.record("p-1", sender="sa")
    await ws.record("p-2", sender="sa", state="unknown")
    report = await post(ws, "b", Receipt("p-1", "undelivered", error="absent"),
                        Receipt("p-2", "delivered"))
    # a's messages are not b's to see: as if no message had those ids yet
    assert report.matched == 0
    assert ws.recipient("p-1", "sa") == ("sent", None)
    assert ws.recipient("p-2", "sa") == ("unknown", None)
    # kept for b's own messages, should b issue those ids: never applied to a's
    assert ws.waiting("b") == {"p-1": "undelivered", "p-2": "delivered"}
    await ws.record("p-1", sender="sa")
    assert ws.recipient("p-1", "sa") == ("sent", None)


async def test_an_early_receipt_waits_for_its_own_gateways_message(ws: Workspace) -> None:
    # b posts a receipt for an id it has not issued yet; a issues that id next
    await post(ws, "b", Receipt("p-9", "undelivered", error="absent"))
    await ws.record("p-9", sender="sa")
    assert ws.recipient("p-9", "sa") == ("sent", None)
    assert ws.waiting("b") == {"p-9": "undelivered"}  # still b's, for b's message
    await ws.record("p-9", sender="sb1")
    assert ws.recipient("p-9", "sb1") == ("undelivered", "absent")
    assert ws.recipient("p-9", "sa") == ("sent", None)
    assert ws.waiting("b") == {}


async def test_each_gateway_keeps_its_own_early_receipt_for_one_id(ws: Workspace) -> None:
    await post(ws, "a", Receipt("7", "delivered"))
    await post(ws, "b", Receipt("7", "undelivered", error="absent"))
    assert (ws.waiting("a"), ws.waiting("b")) == ({"7": "delivered"}, {"7": "undelivered"})
    await ws.record("7", sender="sb2")
    await ws.record("7", sender="sa")
    assert ws.recipient("7", "sa") == ("delivered", None)
    assert ws.recipient("7", "sb2") == ("undelivered", "absent")


async def test_a_sender_no_gateway_claimed_gets_no_early_receipt(ws: Workspace) -> None:
    await post(ws, "a", Receipt("p-1", "delivered"))
    await ws.record("p-1", sender="elsewhere")
    assert ws.recipient("p-1", "elsewhere") == ("sent", None)


async def test_a_sender_moved_to_another_gateway_leaves_the_old_ones_receipts(
    ws: Workspace,
) -> None:
    await post(ws, "a", Receipt("p-1", "delivered"))
    # the config now sends sa through b; b's receipts say so
    await ws.store.apply_receipts("b", [], senders=["sa"])
    await ws.record("p-1", sender="sa")
    assert ws.recipient("p-1", "sa") == ("sent", None)


# -- the cap on early receipts ----------------------------------------------------------------


async def test_past_the_cap_the_oldest_early_receipts_are_dropped(ws: Workspace) -> None:
    await post(ws, "b", Receipt("b-1", "delivered"), cap=3, now=T0)
    await post(ws, "a", *(Receipt(f"old-{i}", "delivered") for i in range(2)), cap=3, now=T0)
    report = await post(ws, "a", *(Receipt(f"new-{i}", "delivered") for i in range(2)),
                        cap=3, now=T0 + 1)
    assert (report.pending, report.dropped) == (2, 1)
    assert sorted(ws.waiting("a")) == ["new-0", "new-1", "old-1"]
    assert ws.waiting("b") == {"b-1": "delivered"}  # another gateway's are not touched


async def test_one_call_over_the_cap_keeps_its_newest(ws: Workspace) -> None:
    report = await post(ws, "a", *(Receipt(f"p-{i}", "delivered") for i in range(5)), cap=2)
    assert (report.pending, report.dropped) == (5, 3)
    assert sorted(ws.waiting("a")) == ["p-3", "p-4"]


async def test_a_cap_of_zero_keeps_every_early_receipt(ws: Workspace) -> None:
    report = await post(ws, "a", *(Receipt(f"p-{i}", "delivered") for i in range(5)), cap=0)
    assert (report.pending, report.dropped, len(ws.waiting("a"))) == (5, 0, 5)


async def test_a_callback_bigger_than_a_chunk_keeps_the_order_across_chunks(
    ws: Workspace,
) -> None:
    n = RECEIPT_CHUNK + 10
    for i in range(n):
        await ws.record(f"p-{i}", sender="sa")
    # the undelivered of p-0 happened first but comes last, a chunk after its delivery
    receipts = [Receipt(f"p-{i}", "delivered", at=T0 + 1) for i in range(n)]
    receipts.append(Receipt("p-0", "undelivered", error="absent", at=T0))
    report = await post(ws, "a", *receipts)
    assert (report.matched, report.ignored) == (n + 1, 0)
    assert ws.recipient("p-0", "sa") == ("delivered", None)
    assert ws.recipient(f"p-{n - 1}", "sa") == ("delivered", None)


async def test_receipts_kept_before_gateways_are_dropped_by_the_migration(
    tmp_path: Path,
) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:8], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute("INSERT INTO receipts_pending (provider_id, status, received_at, expires_at)"
                 " VALUES ('p', 'delivered', 0, 1e12)")
    conn.close()
    store = SQLiteStore.open(tmp_path / "old.db")
    try:
        assert store.conn.execute("SELECT count(*) FROM receipts_pending").fetchone() == (0,)
    finally:
        await store.aclose()


async def test_herald_refuses_a_callback_over_the_bound(
    open_herald: Callable[..., Any],
) -> None:
    herald = await open_herald()
    async with herald:
        body = json.dumps({"receipts": [
            {"provider_id": f"p-{i}", "status": "delivered"} for i in range(11)]})
        with pytest.raises(InputError, match=r"^body: 11 receipts .* at most 10"):
            await herald.receipts("gw", body.encode(), max_receipts=10)
        assert herald.store.conn.execute(
            "SELECT count(*) FROM receipts_pending").fetchone() == (0,)
