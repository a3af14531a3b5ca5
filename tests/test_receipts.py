"""Delivery receipts on a real store: the order of states, errors, early receipts, their ttl."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.store.models import AudienceSource
from engine.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
TTL = 3600.0


class Workspace:
    """A store with one run, and a way to record its messages as a dispatcher would."""

    def __init__(self, store: SQLiteStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.seq = 0

    async def record(self, provider_id: str, state: str = "sent", **outcome: Any) -> None:
        self.seq += 1
        message = Message(self.seq, f"r-{self.seq}", self.seq, f"+4479000000{self.seq:02d}",
                          "s", "x", 1)
        await self.store.record(self.run_id, self.seq, "s", [message],
                                [Outcome(self.seq, state, provider_id=provider_id, **outcome)])

    def recipient(self, provider_id: str) -> tuple[str, str | None]:
        """(state, error) of the recipient the provider id names."""
        row = self.store.conn.execute(
            "SELECT state, error FROM recipients WHERE provider_id = ?", (provider_id,)
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    def waiting(self) -> dict[str, str]:
        """The receipts kept for a message not recorded yet, by provider id."""
        return dict(self.store.conn.execute("SELECT provider_id, status FROM receipts_pending"))


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
        await ws.store.apply_receipts([Receipt("p", state, error="first")])  # type: ignore[arg-type]
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
    report = await ws.store.apply_receipts([Receipt("p", receipt, error=given)])  # type: ignore[arg-type]
    assert (report.matched, report.pending, report.ignored) == (int(moved), 0, int(not moved))
    assert ws.recipient("p") == (end, error)


async def test_a_late_delivery_clears_the_undelivered_error(ws: Workspace) -> None:
    await ws.record("p")
    await ws.record("q")
    await ws.store.apply_receipts([Receipt("p", "undelivered", error="absent"),
                                   Receipt("q", "undelivered", error="absent")])
    await ws.store.apply_receipts([Receipt("p", "delivered"),
                                   Receipt("q", "delivered", error="delivered late")])
    assert ws.recipient("p") == ("delivered", None)
    assert ws.recipient("q") == ("delivered", "delivered late")  # the receipt's own error


async def test_the_same_receipt_twice_changes_nothing(ws: Workspace) -> None:
    await ws.record("p")
    receipt = Receipt("p", "undelivered", error="absent", at=T0)
    assert (await ws.store.apply_receipts([receipt])).matched == 1
    again = await ws.store.apply_receipts([receipt], now=T0 + 60)
    assert (again.matched, again.ignored) == (0, 1)
    updated = ws.store.conn.execute("SELECT updated_at FROM recipients").fetchone()
    assert ws.recipient("p") == ("undelivered", "absent") and updated == (T0,)


# -- several receipts for one message -------------------------------------------------------


async def test_receipts_in_one_call_are_applied_in_the_order_they_happened(
    ws: Workspace,
) -> None:
    await ws.record("p")
    # the gateway posts the delivery first, though the failed attempt came before it
    report = await ws.store.apply_receipts([
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
    report = await ws.store.apply_receipts([
        Receipt("p", "delivered"), Receipt("p", "undelivered", error="absent"),
        Receipt("q", "undelivered", error="absent"), Receipt("q", "delivered"),
    ])
    assert (report.matched, report.ignored) == (3, 1)
    assert ws.recipient("p") == ("delivered", None)  # the undelivered after it is refused
    assert ws.recipient("q") == ("delivered", None)


async def test_two_early_receipts_for_one_message_keep_the_order(ws: Workspace) -> None:
    report = await ws.store.apply_receipts([
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
    report = await ws.store.apply_receipts([Receipt("p", "undelivered", error="absent")])
    assert (report.matched, report.pending, report.ignored) == (0, 1, 0)
    await ws.record("p")
    assert ws.recipient("p") == ("undelivered", "absent")
    assert ws.waiting() == {}


async def test_an_early_receipt_obeys_the_order_when_its_message_is_recorded(
    ws: Workspace,
) -> None:
    await ws.store.apply_receipts([Receipt("p", "delivered")])
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
    await ws.store.apply_receipts([Receipt("p", first, error=error)])  # type: ignore[arg-type]
    error = "later" if later == "undelivered" else None
    report = await ws.store.apply_receipts([Receipt("p", later, error=error)])  # type: ignore[arg-type]
    replaced = kept == later and first != later
    assert (report.pending, report.ignored) == (int(replaced), int(not replaced))
    assert ws.waiting() == {"p": kept}
    await ws.record("p")
    assert ws.recipient("p") == applied


# -- the ttl of early receipts -------------------------------------------------------------


async def test_an_early_receipt_older_than_the_ttl_is_dropped(ws: Workspace) -> None:
    await ws.store.apply_receipts([Receipt("p", "delivered")], ttl=TTL, now=T0)
    await ws.store.apply_receipts([Receipt("q", "delivered")], ttl=TTL, now=T0 + TTL - 1)
    assert ws.waiting() == {"p": "delivered", "q": "delivered"}
    # any later call drops the receipts that waited longer than the ttl
    await ws.store.apply_receipts([], ttl=TTL, now=T0 + TTL + 1)
    assert ws.waiting() == {"q": "delivered"}


async def test_record_never_applies_an_expired_receipt(ws: Workspace) -> None:
    now = time.time()
    await ws.store.apply_receipts([Receipt("old", "delivered")], ttl=TTL, now=now - TTL - 1)
    await ws.store.apply_receipts([Receipt("new", "delivered")], ttl=TTL, now=now - TTL / 2)
    await ws.record("old")  # no receipts call in between dropped it: record must not apply it
    await ws.record("new")
    assert ws.recipient("old") == ("sent", None)
    assert ws.recipient("new") == ("delivered", None)
    assert ws.waiting() == {}


async def test_a_lowered_ttl_drops_receipts_kept_under_a_longer_one(ws: Workspace) -> None:
    await ws.store.apply_receipts([Receipt("p", "delivered")], ttl=7 * 86400.0, now=T0)
    await ws.store.apply_receipts([], ttl=TTL, now=T0 + TTL + 1)
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
