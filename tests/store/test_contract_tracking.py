"""TrackingStore, EventStore and ReportStore on every store: short links and their clicks,
unsubscribes from messages and STOP replies, the event record each of them (and ``record``
and receipts) writes, and the reports read from the counters kept as events arrive."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from engine.core.prepare import Message, Skipped
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.store.base import ChannelRow, Click, ClickReport, LinkRow, LinkStat, ReportFilter, Store
from engine.store.models import Run
from engine.store.open import open_store
from tests.store.helpers import World, make_world, message, messages, new_run, reserve, wall_clock

pytestmark = pytest.mark.anyio

#: A fake time for what takes one (receipts, clicks, unsubscribes): 2023-11-14 22:00 UTC,
#: long before anything ``record`` writes on the real clock.
T = 1_699_999_200.0
HOUR = 3600.0
ALL = ReportFilter()


async def record(
    store: Store, run: Run, msgs: Sequence[Message], outcomes: Sequence[Outcome] | None = None,
    *, batch: int | None = None, sender: str = "s",
) -> None:
    """Reserve the messages as one batch and record their outcomes (all sent, provider id
    ``p<seq>``, unless given)."""
    batch = msgs[0].seq if batch is None else batch
    await reserve(store, run.id, [(batch, sender, msgs)])
    if outcomes is None:
        outcomes = [Outcome(m.seq, "sent", provider_id=f"p{m.seq}") for m in msgs]
    await store.record(run.id, batch, sender, msgs, outcomes)


def totals(**counts: int) -> ChannelRow:
    """The one row of an ungrouped channel report: every count not given is 0."""
    return ChannelRow(None, **{f: counts.get(f, 0) for f in ChannelRow._fields[1:]})


async def kinds(store: Store, run_id: int | None = None) -> list[str]:
    return [e.kind for e in await store.events(run_id=run_id)]


# -- links ---------------------------------------------------------------------------------


async def test_the_tracking_secret_is_made_once_for_every_process_on_the_store(
    store: Store, store_url: str,
) -> None:
    secret = await store.tracking_secret()
    assert len(secret) == 32
    other = await open_store(store_url)
    try:
        assert await other.tracking_secret() == secret
    finally:
        await other.aclose()
    assert await store.tracking_secret() == secret


async def test_a_runs_links_are_made_once_whatever_later_calls_ask(store: Store) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    links = await store.ensure_links(run.id, ["https://a.example/x", "https://b.example"], 2)
    assert [(link.run_id, link.url) for link in links] == [
        (run.id, "https://a.example/x"), (run.id, "https://b.example"),
        (run.id, None), (run.id, None)]
    assert len({link.id for link in links}) == 4
    assert all(0 < link.id < 2**29 for link in links)
    assert await store.ensure_links(run.id, ["https://other.example"], 0) == links
    assert await store.link(links[1].id) == LinkRow(links[1].id, run.id, "https://b.example")
    assert await store.link(links[-1].id + 1000) is None
    # another run has links of its own
    _, second = await new_run(store, w, name="m2")
    theirs = await store.ensure_links(second.id, ["https://a.example/x"], 0)
    assert theirs[0].id not in {link.id for link in links}


async def test_each_seq_base_of_a_run_has_links_of_its_own(store: Store) -> None:
    # a cluster chunk's seqs (from k * 2**32 + 1) are past a code's 29 bits: its codes
    # carry seq - seq_base, so it has its own rows
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    first = await store.ensure_links(run.id, ["https://a.example"], 1)
    chunk = await store.ensure_links(run.id, ["https://a.example"], 1, seq_base=2**32)
    assert [(r.run_id, r.url, r.seq_base) for r in first] == [
        (run.id, "https://a.example", 0), (run.id, None, 0)]
    assert [(r.run_id, r.url, r.seq_base) for r in chunk] == [
        (run.id, "https://a.example", 2**32), (run.id, None, 2**32)]
    assert not {r.id for r in first} & {r.id for r in chunk}
    assert all(0 < r.id < 2**29 for r in chunk)
    # each made once, whatever later calls ask
    assert await store.ensure_links(run.id, [], 3, seq_base=2**32) == chunk
    assert await store.ensure_links(run.id, [], 3) == first
    assert await store.link(chunk[0].id) == LinkRow(chunk[0].id, run.id, "https://a.example",
                                                    2**32)
    assert await store.link(first[1].id) == LinkRow(first[1].id, run.id, None, 0)
    # a data slot's URL and a click take the real seq
    msgs = [message(2**32 + 1, w.ids[0], w.phones[0])]
    await store.reserve(run.id, batches=[(1, "s", msgs)], skipped=[], checkpoint=0,
                        next_seq=None, counts={}, audience_done=False,
                        links=[(chunk[1].id, 2**32 + 1, "https://data.example/1")])
    await store.record(run.id, 1, "s", msgs, [Outcome(2**32 + 1, "sent")])
    assert await store.data_link_url(chunk[1].id, 2**32 + 1) == "https://data.example/1"
    report = await store.add_clicks([Click(chunk[1].id, 2**32 + 1, T, None, None, False)])
    assert report == ClickReport(recorded=1, unique=1, unknown=0)
    ref = await store.recipient_ref(run.id, 2**32 + 1)
    assert ref is not None and ref.phone == w.phones[0]


async def test_reserve_keeps_each_messages_data_link_and_a_second_reserve_replaces_it(
    store: Store,
) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    (slot,) = await store.ensure_links(run.id, [], 1)
    msgs = messages(w, [1, 2])
    await store.reserve(run.id, batches=[(1, "s", msgs)], skipped=[], checkpoint=0,
                        next_seq=None, counts={}, audience_done=False,
                        links=[(slot.id, 1, "https://shop.example/1"),
                               (slot.id, 2, "https://shop.example/2")])
    assert await store.data_link_url(slot.id, 1) == "https://shop.example/1"
    assert await store.data_link_url(slot.id, 2) == "https://shop.example/2"
    assert await store.data_link_url(slot.id, 3) is None
    # a resume re-renders the message: its URL is the new one
    await store.reserve(run.id, batches=[], skipped=[], checkpoint=0, next_seq=None,
                        counts={}, audience_done=False,
                        links=[(slot.id, 1, "https://shop.example/1b")])
    assert await store.data_link_url(slot.id, 1) == "https://shop.example/1b"


# -- record and receipts -------------------------------------------------------------------


async def test_record_writes_a_send_event_per_message_sent_and_counts_the_batch(
    store: Store,
) -> None:
    w = await make_world(store, 4)
    mailing, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3, 4], sender="alpha")
    msgs[1] = msgs[1]._replace(segments=3)
    before = wall_clock()
    await record(store, run, msgs, [
        Outcome(1, "sent", provider_id="p1"), Outcome(2, "sent", provider_id="p2"),
        Outcome(3, "failed", reason="rejected", error="bad number"),
        Outcome(4, "unknown", reason="interrupted"),
    ], sender="alpha")
    events = await store.events(run_id=run.id)
    assert [(e.kind, e.seq, e.profile_id, e.phone, e.message_id, e.sender, e.mailing_id)
            for e in events] == [
        ("send_sms", 1, w.ids[0], w.phones[0], f"{run.uid}-1", "alpha", mailing.id),
        ("send_sms", 2, w.ids[1], w.phones[1], f"{run.uid}-2", "alpha", mailing.id)]
    assert all(before - 1 <= e.at <= wall_clock() + 1 for e in events)
    assert events[0].id < events[1].id
    assert await store.report_channel(ALL) == [
        totals(recipients=4, sent=2, failed=1, unknown=1, segments=4)]
    # the event record pages by id
    assert await store.events(after=events[0].id) == events[1:]
    assert await store.events(limit=1) == events[:1]


async def test_skips_are_not_recipients_of_the_reports(store: Store) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    await reserve(store, run.id, [], skipped=[Skipped(1, w.ids[0], w.phones[0], "suppressed")])
    await record(store, run, messages(w, [2]))
    assert await store.report_channel(ALL) == [totals(recipients=1, sent=1, segments=1)]


async def test_receipts_make_delivery_events_and_count_under_their_reasons(
    store: Store,
) -> None:
    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    await record(store, run, messages(w, [1, 2, 3, 4]))
    report = await store.apply_receipts("gw", [
        Receipt("p1", "delivered"),
        Receipt("p2", "undelivered", error="  Absent   SUBSCRIBER "),
        Receipt("p3", "undelivered", error="absent subscriber"),
        Receipt("p4", "undelivered"),
    ], senders=["s"], now=T)
    assert report.matched == 4
    events = [e for e in await store.events(run_id=run.id) if e.kind != "send_sms"]
    assert [(e.kind, e.seq, e.error, e.at, e.message_id) for e in events] == [
        ("deliv_sms", 1, None, T, f"{run.uid}-1"),
        ("undeliv_sms", 2, "  Absent   SUBSCRIBER ", T, f"{run.uid}-2"),
        ("undeliv_sms", 3, "absent subscriber", T, f"{run.uid}-3"),
        ("undeliv_sms", 4, None, T, f"{run.uid}-4")]
    assert await store.report_channel(ALL) == [
        totals(recipients=4, sent=4, segments=4, delivered=1, undelivered=3)]
    assert await store.report_undeliveries(ALL) == [("absent subscriber", 2), ("undefined", 1)]
    # a receipt that moves nothing adds nothing; a late delivery counts, as its event does
    await store.apply_receipts("gw", [Receipt("p1", "undelivered"), Receipt("p2", "delivered")],
                               senders=["s"], now=T + 1)
    assert await kinds(store, run.id) == [*["send_sms"] * 4, "deliv_sms", *["undeliv_sms"] * 3,
                                          "deliv_sms"]
    (row,) = await store.report_channel(ALL)
    assert (row.delivered, row.undelivered) == (2, 3)


async def test_a_receipt_that_came_before_its_message_counts_when_the_message_is_recorded(
    store: Store,
) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    early = await store.apply_receipts(
        "gw", [Receipt("p1", "undelivered", error="Expired"), Receipt("p2", "delivered")],
        senders=["s"], now=wall_clock())
    assert early.pending == 2
    assert await store.report_undeliveries(ALL) == []
    await record(store, run, messages(w, [1, 2]))
    events = await store.events(run_id=run.id)
    assert [(e.kind, e.seq) for e in events] == [
        ("send_sms", 1), ("send_sms", 2), ("undeliv_sms", 1), ("deliv_sms", 2)]
    assert events[2].error == "Expired"
    assert await store.report_channel(ALL) == [
        totals(recipients=2, sent=2, segments=2, delivered=1, undelivered=1)]
    assert await store.report_undeliveries(ALL) == [("expired", 1)]


async def test_a_cancelled_run_counts_what_may_be_at_its_gateway_as_unknown(
    store: Store,
) -> None:
    w = await make_world(store, 3)
    _, run = await new_run(store, w)
    await reserve(store, run.id, [(1, "s", messages(w, [1, 2])), (2, "s", messages(w, [3]))])
    await store.mark_sending(run.id, 1)
    await store.cancel_run(run.id)
    assert await store.report_channel(ALL) == [totals(recipients=2, unknown=2)]
    assert await kinds(store) == []


# -- clicks --------------------------------------------------------------------------------


@pytest.fixture
async def clicked(store: Store) -> tuple[Run, list[LinkRow]]:
    """A run of two messages sent (seqs 1, 2), a template link and a data slot whose URL
    only message 1 has."""
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    links = await store.ensure_links(run.id, ["https://x.example"], 1)
    msgs = messages(w, [1, 2])
    await store.reserve(run.id, batches=[(1, "s", msgs)], skipped=[], checkpoint=0,
                        next_seq=None, counts={}, audience_done=False,
                        links=[(links[1].id, 1, "https://data.example/1")])
    await store.record(run.id, 1, "s", msgs, [Outcome(m.seq, "sent") for m in msgs])
    return run, links


async def test_a_persons_first_click_on_a_link_is_unique_bots_and_strangers_count_nothing(
    store: Store, clicked: tuple[Run, list[LinkRow]],
) -> None:
    run, (link, slot) = clicked
    report = await store.add_clicks([
        Click(link.id, 1, T, "10.0.0.1", "Mozilla/5.0", False),
        Click(link.id, 1, T + 60, "10.0.0.1", "Mozilla/5.0", False),
        Click(link.id, 2, T + 5, "66.249.0.1", "Googlebot", True),
        Click(link.id, 99, T, None, None, False),  # no such message
        Click(link.id + 1000, 1, T, None, None, False),  # no such link
        Click(slot.id, 2, T, None, None, False),  # message 2 has no URL in that slot
        Click(slot.id, 1, T + 120, None, None, False),
    ])
    assert report == ClickReport(recorded=4, unique=2, unknown=3)
    clicks = [e for e in await store.events(run_id=run.id) if e.kind != "send_sms"]
    assert [(e.kind, e.seq, e.url, e.at) for e in clicks] == [
        ("click_sms", 1, "https://x.example", T),
        ("uclick_sms", 1, "https://x.example", T),
        ("click_sms", 1, "https://x.example", T + 60),
        ("click_sms", 1, "https://data.example/1", T + 120),
        ("uclick_sms", 1, "https://data.example/1", T + 120)]
    assert all(e.message_id == f"{run.uid}-1" and e.sender == "s" for e in clicks)
    # the first click was made before: a later call's is not unique
    again = await store.add_clicks([Click(link.id, 1, T + 300, None, None, False),
                                    Click(link.id, 2, T + 300, None, None, False)])
    assert again == ClickReport(recorded=2, unique=1, unknown=0)
    (row,) = await store.report_channel(ALL)
    assert (row.clicks, row.unique_clicks) == (5, 3)
    assert await store.report_clicks(ALL) == [
        LinkStat("https://x.example", 4, 2), LinkStat("https://data.example/1", 1, 1)]
    assert await store.add_clicks([]) == ClickReport(0, 0, 0)


async def test_the_click_map_is_filtered_by_mailing_and_time(store: Store) -> None:
    w = await make_world(store, 2)
    first, run_a = await new_run(store, w, name="a")
    second, run_b = await new_run(store, w, name="b")
    (a,) = await store.ensure_links(run_a.id, ["https://a.example"], 0)
    (b,) = await store.ensure_links(run_b.id, ["https://b.example"], 0)
    await record(store, run_a, messages(w, [1, 2]))
    await record(store, run_b, messages(w, [1]))
    await store.add_clicks([Click(a.id, 1, T, None, None, False),
                            Click(a.id, 2, T + HOUR, None, None, False),
                            Click(b.id, 1, T + 2 * HOUR, None, None, False)])
    assert await store.report_clicks(ALL) == [
        LinkStat("https://a.example", 2, 2), LinkStat("https://b.example", 1, 1)]
    assert await store.report_clicks(ReportFilter(mailings=(second.id,))) == [
        LinkStat("https://b.example", 1, 1)]
    assert await store.report_clicks(ReportFilter(since=T + HOUR, until=T + 2 * HOUR)) == [
        LinkStat("https://a.example", 1, 1)]
    assert await store.report_clicks(ReportFilter(resource="elsewhere")) == []
    assert first.id != second.id


# -- unsubscribes --------------------------------------------------------------------------


async def subscribed_to(store: Store, w: World, resource: str, i: int = 0) -> bool:
    rows = await store.find_subscriptions(await store.resource_id(resource),
                                          profile_id=w.ids[i])
    return any(r.status == "subscribed" for r in rows)


async def test_unsubscribe_a_recipient_from_the_runs_resource_or_everywhere(
    store: Store,
) -> None:
    w = await make_world(store, 2)
    promo = await store.resource_id("promo")
    await store.subscribe(promo, w.ids[0], w.phones[0])
    mailing, run = await new_run(store, w)
    await record(store, run, messages(w, [1, 2]))
    ref = await store.recipient_ref(run.id, 1)
    assert ref is not None
    assert (ref.run_id, ref.seq, ref.mailing_id, ref.resource, ref.profile_id, ref.phone,
            ref.database_id, ref.subscribed) == (
        run.id, 1, mailing.id, "news", w.ids[0], w.phones[0], w.database_id, True)

    assert await store.unsubscribe_recipient(run.id, 1, at=T) == 1
    assert not await subscribed_to(store, w, "news")
    assert await subscribed_to(store, w, "promo")
    assert await subscribed_to(store, w, "news", 1)  # only the recipient's profile
    ref = await store.recipient_ref(run.id, 1)
    assert ref is not None and not ref.subscribed
    assert await store.unsubscribe_recipient(run.id, 1, at=T + 1) == 0  # already
    assert await store.unsubscribe_recipient(run.id, 1, everywhere=True, at=T + 2) == 1
    assert not await subscribed_to(store, w, "promo")

    unsubs = [e for e in await store.events(run_id=run.id) if e.kind == "unsub_sms"]
    assert [(e.seq, e.profile_id, e.phone, e.message_id, e.at) for e in unsubs] == [
        (1, w.ids[0], w.phones[0], f"{run.uid}-1", T),
        (1, w.ids[0], w.phones[0], f"{run.uid}-1", T + 2)]
    (row,) = await store.report_channel(ALL)
    assert row.unsubscribed == 2


async def test_the_link_unsubscribes_the_profile_whatever_spelling_its_phone_has(
    store: Store,
) -> None:
    """The pipeline normalises a subscription's phone as it sends: the recipient row holds
    E.164, the subscription what was written. The link unsubscribes the profile."""
    w = await make_world(store, 1)
    news = await store.resource_id("news")
    national = "8" + w.phones[0][2:]  # +7XXXXXXXXXX written as 8XXXXXXXXXX
    await store.unsubscribe_phone(news, w.phones[0])
    await store.subscribe(news, w.ids[0], national)
    assert await subscribed_to(store, w, "news")
    _, run = await new_run(store, w)
    await record(store, run, messages(w, [1]))
    ref = await store.recipient_ref(run.id, 1)
    assert ref is not None and ref.subscribed
    assert await store.unsubscribe_recipient(run.id, 1, at=T) == 1
    assert not await subscribed_to(store, w, "news")


async def test_no_recipient_no_unsubscribe(store: Store) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    await reserve(store, run.id, [], skipped=[Skipped(1, w.ids[0], w.phones[0], "policy")])
    assert await store.recipient_ref(run.id, 1) is None  # skipped: never sent
    assert await store.recipient_ref(run.id, 2) is None
    assert await store.unsubscribe_recipient(run.id, 1, at=T) == 0
    assert await store.unsubscribe_recipient(run.id + 1000, 1, everywhere=True, at=T) == 0
    assert await subscribed_to(store, w, "news")
    assert await kinds(store) == []


async def test_a_stop_reply_is_credited_to_the_last_message_sent_to_the_phone(
    store: Store,
) -> None:
    w = await make_world(store, 3)
    news = w.resource_id
    _, old = await new_run(store, w, name="old")
    _, run = await new_run(store, w, name="new")
    await record(store, old, messages(w, [1]))
    await record(store, run, [message(5, w.ids[0], w.phones[0], "s2")], sender="s2")
    assert await store.unsubscribe_reply(w.phones[0], [news], at=T) == 1
    assert not await subscribed_to(store, w, "news")
    (event,) = [e for e in await store.events() if e.kind == "unsub_sms"]
    assert (event.run_id, event.seq, event.message_id, event.sender, event.profile_id,
            event.phone, event.at) == (run.id, 5, f"{run.uid}-5", "s2", w.ids[0],
                                       w.phones[0], T)
    # a phone no message went to: unsubscribed, its event credited to no message
    assert await store.unsubscribe_reply(w.phones[2], [news], at=T + 1) == 1
    last = (await store.events())[-1]
    assert (last.kind, last.run_id, last.seq, last.mailing_id, last.message_id,
            last.sender, last.profile_id) == ("unsub_sms", None, None, None, None, None,
                                               w.ids[2])
    assert await store.unsubscribe_reply(w.phones[2], [news], at=T + 2) == 0
    assert await store.unsubscribe_reply(w.phones[1], [], at=T + 2) == 0
    assert await store.report_channel(ReportFilter(mailings=(run.mailing_id,))) == [
        totals(recipients=1, sent=1, segments=1, unsubscribed=1)]
    (row,) = await store.report_channel(ALL)
    assert row.unsubscribed == 1


# -- reports -------------------------------------------------------------------------------


@pytest.fixture
async def two_mailings(store: Store) -> tuple[int, int]:
    """Mailing A (resource news): messages 1, 2 by sender s1, delivered at T and T + 1h;
    mailing B (resource promo): message 1 by s2, undelivered at T + 3h (the next day).
    Returns the mailings' ids."""
    w = await make_world(store, 2)
    await store.subscribe(await store.resource_id("promo"), w.ids[0], w.phones[0])
    a, run_a = await new_run(store, w, name="a")
    b, run_b = await new_run(store, w, name="b", resource="promo")
    await record(store, run_a, messages(w, [1, 2], "s1"), sender="s1")
    await reserve(store, run_b.id, [(1, "s2", messages(w, [1], "s2"))])
    await store.record(run_b.id, 1, "s2", messages(w, [1], "s2"),
                       [Outcome(1, "sent", provider_id="q1")])
    for now, receipt, sender in [(T, Receipt("p1", "delivered"), "s1"),
                                 (T + HOUR, Receipt("p2", "delivered"), "s1"),
                                 (T + 3 * HOUR, Receipt("q1", "undelivered", error="Spam"),
                                  "s2")]:
        assert (await store.apply_receipts("gw", [receipt], senders=[sender],
                                           now=now)).matched == 1
    return a.id, b.id


async def test_the_channel_report_groups_by_mailing_resource_and_sender(
    store: Store, two_mailings: tuple[int, int],
) -> None:
    a, b = two_mailings
    assert await store.report_channel(ALL) == [
        totals(recipients=3, sent=3, segments=3, delivered=2, undelivered=1)]
    by_mailing = await store.report_channel(ALL, "mailing")
    assert [(r.key, r.recipients, r.delivered, r.undelivered) for r in by_mailing] == [
        (a, 2, 2, 0), (b, 1, 0, 1)]
    by_resource = await store.report_channel(ALL, "resource")
    assert [(r.key, r.recipients) for r in by_resource] == [("news", 2), ("promo", 1)]
    by_sender = await store.report_channel(ALL, "sender")
    assert [(r.key, r.sent, r.delivered) for r in by_sender] == [("s1", 2, 2), ("s2", 1, 0)]
    assert await store.report_channel(ReportFilter(mailings=(b,)), "sender") == [
        ChannelRow("s2", 1, 1, 0, 1, 0, 0, 1, 0, 0, 0)]
    assert await store.report_channel(ReportFilter(resource="news"), "resource") == [
        ChannelRow("news", 2, 2, 2, 0, 0, 0, 2, 0, 0, 0)]
    assert await store.report_channel(ReportFilter(mailings=(a + b + 1000,))) == []


async def test_the_channel_report_by_hour_and_day_counts_whole_utc_hours(
    store: Store, two_mailings: tuple[int, int],
) -> None:
    since, until = T, T + 4 * HOUR  # 2023-11-14 22:00 to 2023-11-15 02:00
    window = ReportFilter(since=since, until=until)
    by_hour = await store.report_channel(window, "hour")
    assert [(r.key, r.delivered, r.undelivered, r.sent) for r in by_hour] == [
        ("2023-11-14T22:00Z", 1, 0, 0), ("2023-11-14T23:00Z", 1, 0, 0),
        ("2023-11-15T01:00Z", 0, 1, 0)]
    by_day = await store.report_channel(window, "day")
    assert [(r.key, r.delivered, r.undelivered) for r in by_day] == [
        ("2023-11-14", 2, 0), ("2023-11-15", 0, 1)]
    # a bound inside an hour takes the whole hour: the counters are kept by the hour
    assert [r.key for r in await store.report_channel(
        ReportFilter(since=T + HOUR + 1800, until=T + HOUR + 1801), "hour")] == [
        "2023-11-14T23:00Z"]
    assert await store.report_channel(ReportFilter(since=T + 4 * HOUR, until=T + 5 * HOUR)) == []
    # the sends were recorded on the real clock, long after
    (later,) = await store.report_channel(ReportFilter(since=T + 5 * HOUR))
    assert (later.sent, later.delivered) == (3, 0)


async def test_undeliveries_by_reason_most_first(store: Store) -> None:
    w = await make_world(store, 5)
    _, run = await new_run(store, w)
    await record(store, run, messages(w, [1, 2, 3, 4, 5]))
    await store.apply_receipts("gw", [
        Receipt("p1", "undelivered", error="Blocked"),
        Receipt("p2", "undelivered", error="absent"),
        Receipt("p3", "undelivered", error="ABSENT"),
        Receipt("p4", "undelivered", error="   "),
        Receipt("p5", "undelivered", error="blocked"),
    ], senders=["s"], now=T)
    assert await store.report_undeliveries(ALL) == [
        ("absent", 2), ("blocked", 2), ("undefined", 1)]
    assert await store.report_undeliveries(ReportFilter(until=T)) == []
    assert await store.report_undeliveries(ReportFilter(mailings=(run.mailing_id,),
                                                        since=T)) != []
