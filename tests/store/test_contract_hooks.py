"""HookStore on every store: the action hooks' outbox. Events come out of the record in
delivery order with what a hook's message says of them (mailing, resource, database,
custom_data...); a hook's cursor, lease and failure; dead letters; import events. On
PostgreSQL, a cursor never passes an event whose transaction commits late."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
import pytest

from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.importing.events import import_data, record_import
from engine.importing.run import ImportReport
from engine.store.base import (
    ORIGIN,
    Click,
    DeadLetter,
    EventPosition,
    HookEvent,
    HookState,
    Store,
)
from engine.store.models import RunSpec
from tests.store.helpers import World, make_world, messages, reserve

pytestmark = pytest.mark.anyio

#: A fake time for what takes one (receipts, clicks, import events).
T = 1_699_999_200.0
_decode = msgspec.json.decode


class _Settled:
    """``store``, whose ``hook_events`` first waits until every event recorded so far can
    be read. On PostgreSQL a hook reads only events under the snapshot's xmin, and any
    transaction open on the server (another test's, in another database) holds that back
    for a moment: what these tests check is the order and content, not that moment."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def hook_events(self, after: EventPosition, limit: int, *,
                          upto: EventPosition | None = None) -> list[HookEvent]:
        recorded = len(await self._store.events(limit=1_000_000))
        for _ in range(400):  # 20 s at most
            if len(await self._store.hook_events(ORIGIN, 1_000_000)) >= recorded:
                break
            await anyio.sleep(0.05)
        return await self._store.hook_events(after, limit, upto=upto)


def settled(store: Store) -> _Settled:
    return _Settled(store)


async def everything(store: Store, after: EventPosition = ORIGIN) -> list[HookEvent]:
    """Every event after ``after`` that hooks can read now, a small page at a time."""
    out: list[HookEvent] = []
    while page := await settled(store).hook_events(after, 3):
        out += page
        after = page[-1].position
    return out


async def send(store: Store, w: World, run_id: int, seqs: Sequence[int], batch: int) -> None:
    """Reserve and record messages ``seqs`` as sent (provider id ``p<seq>``)."""
    msgs = messages(w, seqs)
    await reserve(store, run_id, [(batch, "s", msgs)])
    await store.record(run_id, batch, "s", msgs,
                       [Outcome(m.seq, "sent", provider_id=f"p{m.seq}") for m in msgs])


async def test_events_come_out_in_order_with_what_a_hooks_message_says(store: Store) -> None:
    w = await make_world(store, 3)
    resource_id = await store.resource_id("news")
    mailing = await store.create_mailing(
        name="welcome", kind="trigger", resource="news", source=w.source(), template="hi",
        limit=None)
    run = await store.start_run(mailing.id)
    queued = await store.enqueue_triggers(
        mailing.id, run.id, [(w.ids[0], b"{}", None), (w.ids[1], b"{}", None)],
        custom_data=[b'{"order": 17, "tags": ["a"]}', None])
    assert queued == [(1, False), (2, False)]
    await send(store, w, run.id, [1, 2], batch=1)
    await store.apply_receipts("gw", [Receipt("p1", "delivered"),
                                      Receipt("p2", "undelivered", error="Absent")],
                               senders=["s"], now=T)
    [link] = await store.ensure_links(run.id, ["https://x.example/a"], 0)
    await store.add_clicks([Click(link.id, 1, T + 5, None, None, False)])

    events = await everything(store)
    assert [(e.kind, e.seq) for e in events] == [
        ("send_sms", 1), ("send_sms", 2), ("deliv_sms", 1), ("undeliv_sms", 2),
        ("click_sms", 1), ("uclick_sms", 1)]
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    first = events[0]
    assert (first.mailing_id, first.run_id, first.message_id, first.profile_id) == (
        mailing.id, run.id, f"{run.uid}-1", w.ids[0])
    assert (first.database_id, first.database) == (w.database_id, "main")
    assert (first.resource_id, first.resource) == (resource_id, "news")
    assert (first.phone, first.sender, first.is_test) == (w.phones[0], "s", False)
    assert first.data is None
    # the trigger call's custom_data rides with every event of its message, and only its
    with_data = {(e.kind, e.seq): e.custom_data for e in events}
    for key in [("send_sms", 1), ("deliv_sms", 1), ("click_sms", 1), ("uclick_sms", 1)]:
        assert _decode(with_data[key] or b"null") == {"order": 17, "tags": ["a"]}, key
    assert with_data["send_sms", 2] is None and with_data["undeliv_sms", 2] is None
    assert events[3].error == "Absent"
    assert events[4].url == "https://x.example/a" and events[4].at == T + 5
    # a page ends where asked, and goes on from a position
    assert await settled(store).hook_events(ORIGIN, 2) == events[:2]
    assert await settled(store).hook_events(events[1].position, 2) == events[2:4]
    assert await settled(store).hook_events(events[-1].position, 10) == []


async def test_upto_bounds_a_read_and_events_at_finds_a_time(store: Store) -> None:
    db = await store.database_id("main", create=True)
    for i in range(5):
        await store.record_import_event("import_api", T + 10 * i, db, b'{"n": %d}' % i)
    events = await everything(store)
    assert [_decode(e.data or b"") for e in events] == [{"n": i} for i in range(5)]
    assert await settled(store).hook_events(ORIGIN, 10, upto=events[2].position) == events[:3]
    assert await settled(store).hook_events(events[0].position, 10, upto=events[2].position) == \
        events[1:3]
    since = await store.events_at(T + 15)
    assert await settled(store).hook_events(since, 10) == events[2:]
    assert await settled(store).hook_events(await store.events_at(T), 10) == events
    assert await settled(store).hook_events(await store.events_at(T + 40), 10) == events[4:]
    # nothing that late: the end of the record, where later events come after
    end = await store.events_at(T + 1000)
    assert await settled(store).hook_events(end, 10) == []
    await store.record_import_event("import_api", T + 2000, db, b"{}")
    assert [e.at for e in await settled(store).hook_events(end, 10)] == [T + 2000]


async def test_a_test_sends_events_are_marked_not_dropped(store: Store) -> None:
    # filtering (kinds, include_tests...) is the deliverer's: the store hands over all
    w = await make_world(store, 2)
    mailing = await store.create_mailing(
        name="promo", kind="broadcast", resource="news", source=w.source(), template="hi",
        limit=None)
    trial = await store.start_run(mailing.id, RunSpec(phase="trial", is_test=True))
    await send(store, w, trial.id, [1], batch=1)
    real = await store.start_run(mailing.id)
    await send(store, w, real.id, [1, 2], batch=1)
    events = await everything(store)
    assert [(e.run_id, e.is_test) for e in events] == [
        (trial.id, True), (real.id, False), (real.id, False)]
    assert all(e.mailing_id == mailing.id and e.custom_data is None for e in events)


async def test_import_events_carry_their_database_and_counts(store: Store) -> None:
    db = await store.database_id("leads", create=True)
    await store.database_id("other", create=True)
    report = ImportReport(file="/tmp/in/leads.csv", added=2, updated=1, rejected=1, rows=4)
    await record_import(store, "import_file", db, report, source="/tmp/in/leads.csv")
    await record_import(store, "import_api", db, {"added": 1, "errors": 2},
                        source="/api/v1.1/profiles/import")
    file_event, api_event = await everything(store)
    assert (file_event.kind, file_event.database_id, file_event.database) == (
        "import_file", db, "leads")
    assert (file_event.mailing_id, file_event.run_id, file_event.seq, file_event.message_id,
            file_event.profile_id, file_event.resource_id) == (None,) * 6
    assert _decode(file_event.data or b"") == {
        "db_id": db, "added": 2, "updated": 1, "skipped": 0, "errors": 1, "total": 4,
        "file": "leads.csv"}
    assert api_event.kind == "import_api" and api_event.database == "leads"
    assert _decode(api_event.data or b"") == {
        "db_id": db, "added": 1, "updated": 0, "skipped": 0, "errors": 2, "total": 3,
        "source": "/api/v1.1/profiles/import"}
    assert api_event.position > file_event.position
    assert abs(api_event.at - file_event.at) < 60


def test_import_data_counts_without_a_source() -> None:
    assert import_data("import_api", 3, {"added": 1, "updated": 2, "skipped": 3}) == {
        "db_id": 3, "added": 1, "updated": 2, "skipped": 3, "errors": 0, "total": 6}


# -- cursors and leases ----------------------------------------------------------------------


async def test_a_new_hook_starts_at_the_end_of_the_record(store: Store) -> None:
    db = await store.database_id("main", create=True)
    await store.record_import_event("import_api", T, db, b'{"old": true}')
    # "the end" is what hooks can read. On PostgreSQL an event is readable once every
    # older transaction on the server has ended: one still open there (another test's,
    # in another database) at the claim would let the new hook have the old event too,
    # as delivery is at least once. So the claim comes once the old event can be read.
    assert len(await settled(store).hook_events(ORIGIN, 10)) == 1
    state = await store.claim_hook("crm", "proc-a", 60)
    assert state is not None
    assert (state.name, state.owner, state.last_error, state.failing_since,
            state.delivered) == ("crm", "proc-a", "", None, 0)
    assert await settled(store).hook_events(state.cursor, 10) == []
    await store.record_import_event("import_api", T, db, b'{"new": true}')
    [event] = await settled(store).hook_events(state.cursor, 10)
    assert _decode(event.data or b"") == {"new": True}
    # claimed again, it keeps its cursor
    again = await store.claim_hook("crm", "proc-a", 60)
    assert again is not None and again.cursor == state.cursor
    assert await store.hook_states() == [again]


async def test_a_lease_is_exclusive_until_released_or_expired(store: Store) -> None:
    a = await store.claim_hook("crm", "proc-a", 60)
    assert a is not None
    assert await store.claim_hook("crm", "proc-b", 60) is None
    renewed = await store.claim_hook("crm", "proc-a", 60)
    assert renewed is not None and renewed.lease_until >= a.lease_until
    # the one holding it writes; another is fenced off and writes nothing
    assert not await store.advance_hook("crm", "proc-b", EventPosition(a.cursor.txid, 99), 5)
    assert not await store.fail_hook("crm", "proc-b", "boom", T)
    [state] = await store.hook_states()
    assert (state.cursor, state.delivered, state.last_error) == (a.cursor, 0, "")
    await store.release_hook("crm", "proc-b")  # not its lease: nothing happens
    assert await store.claim_hook("crm", "proc-b", 60) is None
    await store.release_hook("crm", "proc-a")
    b = await store.claim_hook("crm", "proc-b", 60)
    assert b is not None and b.owner == "proc-b" and b.cursor == a.cursor
    assert not await store.advance_hook("crm", "proc-a", a.cursor, 1)
    # an expired lease (ttl in the past: no waiting) is anyone's, and fences its owner
    assert await store.claim_hook("erp", "proc-a", -1) is not None
    assert not await store.advance_hook("erp", "proc-a", ORIGIN, 1)
    taken = await store.claim_hook("erp", "proc-b", 60)
    assert taken is not None and taken.owner == "proc-b"
    # hooks are independent
    assert [s.name for s in await store.hook_states()] == ["crm", "erp"]


async def test_advancing_counts_moves_forward_only_and_clears_a_failure(store: Store) -> None:
    db = await store.database_id("main", create=True)
    state = await store.claim_hook("crm", "me", 60)
    assert state is not None
    for i in range(3):
        await store.record_import_event("import_api", T + i, db, b"{}")
    events = await settled(store).hook_events(state.cursor, 10)
    assert len(events) == 3
    assert await store.fail_hook("crm", "me", "HTTP 500", T)
    [failing] = await store.hook_states()
    assert (failing.last_error, failing.failing_since) == ("HTTP 500", T)
    assert await store.advance_hook("crm", "me", events[1].position, 2)
    assert await store.advance_hook("crm", "me", events[0].position, 0)  # never back
    [now] = await store.hook_states()
    assert (now.cursor, now.delivered, now.last_error, now.failing_since) == (
        events[1].position, 2, "", None)
    assert await settled(store).hook_events(now.cursor, 10) == events[2:]
    assert await store.advance_hook("crm", "me", events[2].position, 1)
    [done] = await store.hook_states()
    assert (done.cursor, done.delivered) == (events[2].position, 3)


async def test_a_dead_letter_keeps_the_batch_and_moves_the_cursor_past_it(
    store: Store,
) -> None:
    db = await store.database_id("main", create=True)
    state = await store.claim_hook("crm", "me", 60)
    assert state is not None
    for i in range(4):
        await store.record_import_event("import_api", T + i, db, b"{}")
    events = await settled(store).hook_events(state.cursor, 10)
    assert await store.fail_hook("crm", "me", "HTTP 503", T)
    letter = DeadLetter(0, "crm", state.cursor, events[2].position, 3, "HTTP 503", T, T + 900)
    # not the lease holder: nothing kept, nothing moved
    assert not await store.dead_letter("crm", "other", letter)
    assert await store.dead_letters() == []
    assert await store.dead_letter("crm", "me", letter)
    [kept] = await store.dead_letters("crm")
    assert kept._replace(id=0) == letter and kept.id > 0
    [moved] = await store.hook_states()
    assert moved.cursor == events[2].position and moved.failing_since is None
    assert moved.delivered == 0
    assert await settled(store).hook_events(moved.cursor, 10) == events[3:]
    # a replay reads the letter's events again
    assert await settled(store).hook_events(kept.after, 10, upto=kept.upto) == events[:3]
    # another hook's letters are its own
    assert await store.claim_hook("erp", "me", 60) is not None
    assert await store.dead_letter("erp", "me", letter._replace(hook="erp", events=1))
    assert [d.hook for d in await store.dead_letters()] == ["crm", "erp"]
    assert [d.hook for d in await store.dead_letters("erp")] == ["erp"]
    await store.drop_dead_letters([kept.id])
    assert [d.hook for d in await store.dead_letters()] == ["erp"]
    await store.drop_dead_letters([])


async def test_hook_state_is_shared_by_every_process_on_the_store(
    store: Store, store_url: str,
) -> None:
    from engine.store.open import open_store

    assert await store.claim_hook("crm", "proc-a", 60) is not None
    other = await open_store(store_url)
    try:
        assert await other.claim_hook("crm", "proc-b", 60) is None
        [seen] = await other.hook_states()
        assert isinstance(seen, HookState) and seen.owner == "proc-a"
    finally:
        await other.aclose()


# -- PostgreSQL: transactions that commit late -----------------------------------------------


#: SQLite writers take turns: its ids grow in commit order, and its cursor is an id.
_POSTGRES_ONLY = pytest.mark.parametrize("store_kind", ["postgres"])


def _pg_writer(url: str) -> Any:
    import psycopg

    return psycopg.connect(url)


def _insert_event(conn: Any, phone: str) -> int:
    row = conn.execute("INSERT INTO events (kind, at, phone) VALUES ('send_sms', %s, %s)"
                       " RETURNING id", (T, phone)).fetchone()
    return int(row[0])


async def _eventually(read: Callable[[], Any], check: Callable[[Any], bool]) -> Any:
    """``read()`` until ``check`` holds: another session on the server (another test's,
    in another database) may hold the snapshot's xmin back for a moment."""
    for _ in range(400):  # 20 s at most
        if check(got := await read()):
            return got
        await anyio.sleep(0.05)
    raise AssertionError(f"still {got!r}")


@_POSTGRES_ONLY
async def test_pg_a_cursor_never_passes_an_event_that_commits_late(
    store: Store, store_url: str,
) -> None:
    state = await store.claim_hook("crm", "me", 60)
    assert state is not None
    start = state.cursor
    slow = _pg_writer(store_url)
    try:
        slow_id = _insert_event(slow, "+1-slow")  # drawn first, committed last
        db = await store.database_id("main", create=True)
        await store.record_import_event("import_api", T, db, b"{}")  # a later id, committed
        # the committed event waits behind the open transaction (an id cursor would have
        # delivered it and then skipped the slow one)
        assert await store.hook_events(start, 10) == []
        slow.commit()
    finally:
        slow.close()
    events = await _eventually(lambda: store.hook_events(start, 10), lambda got: len(got) == 2)
    assert [e.kind for e in events] == ["send_sms", "import_api"]
    assert events[0].position.id == slow_id and events[0].phone == "+1-slow"


@_POSTGRES_ONLY
async def test_pg_delivery_order_is_the_writers_transactions_not_the_ids(
    store: Store, store_url: str,
) -> None:
    state = await store.claim_hook("crm", "me", 60)
    assert state is not None
    early, late = _pg_writer(store_url), _pg_writer(store_url)
    try:
        early.execute("SELECT pg_current_xact_id()")  # its transaction id comes first
        late_id = _insert_event(late, "+2-late")  # ... its event's id first
        early_id = _insert_event(early, "+2-early")
        assert late_id < early_id
        early.commit()
        # the early transaction's event is readable while the late one is still open
        [first] = await _eventually(lambda: store.hook_events(state.cursor, 10),
                                    lambda got: len(got) == 1)
        assert first.position.id == early_id
        assert await store.advance_hook("crm", "me", first.position, 1)
        late.commit()
    finally:
        early.close()
        late.close()
    [moved] = await store.hook_states()
    # the smaller id committed last, after the cursor passed the larger: still delivered
    [second] = await _eventually(lambda: store.hook_events(moved.cursor, 10),
                                 lambda got: len(got) == 1)
    assert second.position.id == late_id and second.position > first.position
