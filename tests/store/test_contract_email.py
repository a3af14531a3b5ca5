"""The email channel on every store: email subscriptions imported and read by an email
audience, the run's dedupe and suppression on addresses and domains, an email run's events
(``send``, ``deliv``, ``click``, ``unsub``...), opens, and bounces and complaints.

An email subscription's ``phone`` holds its normalised address; everything downstream that
says "phone" (messages, recipients, events) holds the address for an email run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import pytest

from engine.core.policy import Policy
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Bounce, Receipt
from engine.store.base import (
    BounceReport,
    Click,
    ImportRecord,
    Open,
    OpenReport,
    ReportFilter,
    Store,
)
from engine.store.models import AudienceSource, Mailing, Run
from engine.store.open import open_store
from engine.store.sqlite import policy as sqlite_policy
from tests.store.helpers import audience, make_world, message, new_run, phone, reserve

pytestmark = pytest.mark.anyio

#: A fake time for what takes one (receipts, opens, bounces): 2023-11-14 22:00 UTC.
T = 1_699_999_200.0
ALL = ReportFilter()


def address(i: int) -> str:
    """Profile ``i``'s address as an import gives it: the domain in mixed case."""
    return f"User{i}@Example.COM"


def normal(i: int) -> str:
    """``address(i)`` normalised: the local part kept, the domain lowercased."""
    return f"User{i}@example.com"


class Mail(NamedTuple):
    """A profile database whose profiles are subscribed by email to ``letters``."""

    database_id: int
    resource_id: int
    ids: list[int]
    #: The normalised addresses, in profile order.
    emails: list[str]

    def source(self) -> AudienceSource:
        return AudienceSource("list", self.database_id, channel="email")


async def make_mail(
    store: Store, n: int = 3, *, resource: str = "letters", database: str = "main",
) -> Mail:
    """``n`` profiles (phone ``phone(i)``, email ``address(i)``), subscribed by email to
    ``resource``."""
    database_id = await store.database_id(database, create=True)
    resource_id = await store.resource_id(resource)
    records = [ImportRecord(phone(i), phone(i), address(i), {"n": i}) for i in range(1, n + 1)]
    result = await store.import_profiles(database_id, records, matching="phone",
                                         resource_id=resource_id, channel="email")
    assert (result.added, result.rejected) == (n, ())
    found = await store.find_profiles(database_id, "phone", [phone(i) for i in range(1, n + 1)])
    ids = [found[phone(i)] for i in range(1, n + 1)]
    return Mail(database_id, resource_id, ids, [normal(i) for i in range(1, n + 1)])


async def email_run(store: Store, mail: Mail, name: str = "m") -> tuple[Mailing, Run]:
    return await store.create_run(name=name, resource="letters", source=mail.source(),
                                  template="<p>hi</p>", limit=None)


def mails(mail: Mail, seqs: Sequence[int], sender: str = "s") -> list[Message]:
    """The messages of seqs ``seqs`` (1-based), to the profiles' addresses in turn."""
    return [Message(s, f"r-{s}", mail.ids[s - 1], mail.emails[s - 1], sender, "<p>hi</p>", 1)
            for s in seqs]


async def send(store: Store, run: Run, msgs: Sequence[Message], sender: str = "s") -> None:
    """Reserve the messages as one batch and record them sent (provider id ``p<seq>``)."""
    await reserve(store, run.id, [(msgs[0].seq, sender, msgs)])
    await store.record(run.id, msgs[0].seq, sender, msgs,
                       [Outcome(m.seq, "sent", provider_id=f"p{m.seq}") for m in msgs])


async def statuses(store: Store, mail: Mail) -> list[str]:
    """The status of each profile's subscription to the resource, in profile order."""
    out = []
    for pid in mail.ids:
        (row,) = await store.find_subscriptions(mail.resource_id, profile_id=pid)
        out.append(row.status)
    return out


async def kinds(store: Store, run_id: int) -> list[str]:
    return [e.kind for e in await store.events(run_id=run_id)]


# -- subscriptions and the audience --------------------------------------------------------


async def test_importing_for_an_email_resource_subscribes_the_normalised_address(
    store: Store,
) -> None:
    db = await store.database_id("main", create=True)
    letters = await store.resource_id("letters")
    result = await store.import_profiles(db, [
        ImportRecord(phone(1), phone(1), "Ann@Example.COM", {}),
        ImportRecord(phone(2), phone(2), "not an address", {}),
        ImportRecord(phone(3), phone(3), None, {}),
        ImportRecord(phone(4), phone(4), "ivan@Пример.РФ", {}),
    ], matching="phone", resource_id=letters, channel="email")
    # a bad address rejects its record, as a bad phone does; no address: not subscribed
    assert (result.added, result.updated) == (3, 0)
    assert [index for index, _ in result.rejected] == [1]
    assert "not an email address" in result.rejected[0][1]
    found = await store.find_profiles(db, "phone", [phone(1), phone(2), phone(3), phone(4)])
    assert phone(2) not in found
    rows = await store.find_subscriptions(letters)
    assert [(r.profile_id, r.phone, r.channel, r.status) for r in rows] == [
        (found[phone(1)], "Ann@example.com", "email", "subscribed"),
        (found[phone(4)], "ivan@xn--e1afmkfd.xn--p1ai", "email", "subscribed")]
    # importing again changes nothing; an SMS resource's import subscribes phones, as ever
    again = await store.import_profiles(db, [ImportRecord(phone(1), None, "Ann@EXAMPLE.com",
                                                          {})],
                                        matching="phone", resource_id=letters, channel="email")
    assert again.updated == 1
    assert len(await store.find_subscriptions(letters)) == 2
    news = await store.resource_id("news")
    await store.import_profiles(db, [ImportRecord(phone(1), phone(1), "Ann@Example.COM", {})],
                                matching="phone", resource_id=news)
    (sms,) = await store.find_subscriptions(news)
    assert (sms.phone, sms.channel) == (phone(1), "sms")


async def test_an_email_mailing_keeps_its_sources_channel(store: Store) -> None:
    mail = await make_mail(store, 1)
    mailing, run = await email_run(store, mail)
    assert mailing.source == AudienceSource("list", mail.database_id, None, "email")
    assert (await store.get_mailing(mailing.id)).source.channel == "email"
    got, _ = await store.get_run(run.id)
    assert got.source.channel == "email"
    assert [m.source.channel for m in await store.list_mailings()] == ["email"]
    sms = await store.create_mailing(name="s", kind="broadcast", resource="news",
                                     source=AudienceSource("list", mail.database_id),
                                     template="hi", limit=None)
    assert sms.source.channel == "sms"


async def test_an_email_audience_reads_email_subscriptions_only(store: Store) -> None:
    mail = await make_mail(store, 2)
    # a third profile has only an SMS subscription, to another resource
    news = await store.resource_id("news")
    await store.import_profiles(mail.database_id, [ImportRecord(phone(3), phone(3), None, {})],
                                matching="phone", resource_id=news)
    (third,) = (await store.find_profiles(mail.database_id, "phone", [phone(3)])).values()
    rows = audience(await store.audience_chunk(mail.source(), mail.resource_id, 0, 10))
    assert [(r.profile_id, r.phone) for r in rows] == [
        (mail.ids[0], mail.emails[0]), (mail.ids[1], mail.emails[1]), (third, None)]
    # the SMS channel of the same resource reads none of them; the email one not news's
    sms = AudienceSource("list", mail.database_id)
    assert [r.phone for r in audience(await store.audience_chunk(
        sms, mail.resource_id, 0, 10))] == [None, None, None]
    assert [r.phone for r in audience(await store.audience_chunk(
        mail.source(), news, 0, 10))] == [None, None, None]
    page, after = await store.audience_page(mail.source(), mail.resource_id, 0, 10, T)
    assert [r[2] for r in page] == [*mail.emails, None] and after == third
    resumed = audience(await store.audience_rows(mail.source(), mail.resource_id,
                                                 [mail.ids[1]]))
    assert [r.phone for r in resumed] == [mail.emails[1]]
    # a segment of an email mailing reads the same subscriptions
    seg = await store.create_segment("two", mail.database_id, profile_ids=[mail.ids[1], third])
    source = AudienceSource("segment", mail.database_id, seg.id, "email")
    page, _ = await store.audience_page(source, mail.resource_id, 0, 10, T)
    assert [(r[0], r[2]) for r in page] == [(mail.ids[1], mail.emails[1]), (third, None)]
    dynamic = await store.create_segment("big", mail.database_id, condition="lead.n greater 1")
    source = AudienceSource("segment", mail.database_id, dynamic.id, "email")
    page, _ = await store.audience_page(source, mail.resource_id, 0, 10, T)
    assert [(r[0], r[2]) for r in page] == [(mail.ids[1], mail.emails[1])]
    assert await store.count_audience(mail.source()) == 3
    assert await store.audience_bound(mail.source()) >= 3


async def test_subscriptions_of_an_email_resource_are_found_and_changed_by_address(
    store: Store,
) -> None:
    mail = await make_mail(store, 2)
    (row,) = await store.find_subscriptions(mail.resource_id, phone=mail.emails[0])
    assert (row.profile_id, row.channel) == (mail.ids[0], "email")
    assert await store.set_subscription_status(mail.resource_id, [mail.ids[0]],
                                               "suspended") == 1
    assert await statuses(store, mail) == ["suspended", "subscribed"]
    assert await store.unsubscribe_phone(mail.resource_id, mail.emails[1]) == 1
    assert await statuses(store, mail) == ["suspended", "unsubscribed"]
    assert await store.subscribe(mail.resource_id, mail.ids[1], mail.emails[1]) == 1
    assert await statuses(store, mail) == ["suspended", "subscribed"]
    rows = audience(await store.audience_chunk(mail.source(), mail.resource_id, 0, 10))
    assert [r.phone for r in rows] == [None, mail.emails[1]]


# -- dedupe, suppression, policies ---------------------------------------------------------


async def test_an_email_runs_lookup_dedupes_addresses_and_suppresses_addresses_and_domains(
    store: Store, store_url: str,
) -> None:
    mail = await make_mail(store, 3)
    await store.add_suppressions("stop", "email", [mail.emails[1]])
    await store.add_suppressions("stop", "domain", ["blocked.example"])
    await store.add_suppressions("stop", "phone", [phone(1)])
    await store.add_suppressions("mine", "email", [mail.emails[2]], is_global=False)
    mailing, run = await email_run(store, mail)
    await send(store, run, mails(mail, [1]))
    await reserve(store, run.id, [(2, "s", mails(mail, [3]))])  # journalled, not recorded
    asked = [*mail.emails, "x@blocked.example", "y@other.example"]
    suppressed, seen = await store.lookup(run.id, asked, [mail.emails[0], mail.emails[2],
                                                           "y@other.example"])
    assert suppressed == {mail.emails[1], "x@blocked.example"}
    assert seen == {mail.emails[0], mail.emails[2]}
    # a list attached to the mailing applies to it
    await store.attach_suppression_list("mine", mailing_id=mailing.id)
    suppressed, _ = await store.lookup(run.id, asked, [])
    assert suppressed == {mail.emails[1], mail.emails[2], "x@blocked.example"}
    # the exact record is rebuilt from the recipients and the journal by another process
    other = await open_store(store_url)
    try:
        _, seen = await other.lookup(run.id, [], [*mail.emails, "y@other.example"])
        assert seen == {mail.emails[0], mail.emails[2]}
    finally:
        await other.aclose()
    # an SMS run's lookup still reads phones
    sms, sms_run = await store.create_run(
        name="sms", resource="news", source=AudienceSource("list", mail.database_id),
        template="hi", limit=None)
    suppressed, _ = await store.lookup(sms_run.id, [phone(1), phone(2)], [])
    assert suppressed == {phone(1)} and sms.source.channel == "sms"


async def test_a_listed_address_is_suppressed_whatever_the_case_of_either(
    store: Store,
) -> None:
    """Lists hold emails lowercased and domains normalised; a run's addresses keep their
    local part as written, and are on a list whatever its case."""
    mail = await make_mail(store, 2)
    await store.add_suppressions("stop", "email", [mail.emails[0].lower()])
    await store.add_suppressions("stop", "email", [mail.emails[1].upper()])
    await store.add_suppressions("stop", "domain", ["@Пример.РФ"])
    _, run = await email_run(store, mail)
    asked = [*mail.emails, "ivan@xn--e1afmkfd.xn--p1ai"]
    suppressed, _ = await store.lookup(run.id, asked, [])
    assert mail.emails[0] != mail.emails[0].lower()  # the case differs indeed
    assert suppressed == set(asked)


async def test_sending_policies_count_an_email_runs_messages_per_address(
    store: Store,
) -> None:
    mail = await make_mail(store, 2)
    _, run = await email_run(store, mail)
    await reserve(store, run.id, [(1, "s", mails(mail, [1, 2]))])
    _, again = await email_run(store, mail, name="again")
    await reserve(store, again.id, [(1, "s", mails(mail, [1]))])
    now = time.time()
    contact = Policy(max_messages=5, period_days=1, scope="contact")
    assert await store.policy_counts(contact, mail.resource_id,
                                     [*mail.emails, "nobody@example.com"], now) == {
        mail.emails[0]: 2, mail.emails[1]: 1}
    profile = Policy(max_messages=5, period_days=1, scope="profile")
    assert await store.policy_counts(profile, mail.resource_id, mail.ids, now) == {
        mail.ids[0]: 2, mail.ids[1]: 1}


@pytest.mark.parametrize("fold_at", [1, 4])
async def test_phone_and_address_counts_stay_apart_across_folds(
    store: Store, monkeypatch: pytest.MonkeyPatch, fold_at: int
) -> None:
    """An SMS run's phones and an email run's addresses share SQLite's recent contact
    log; a fold (here every ``fold_at`` messages) sends each to its own counts."""
    monkeypatch.setattr(sqlite_policy, "FOLD_AT", fold_at)
    mail = await make_mail(store, 2)
    sms = await make_world(store, 2, database="phones", first=10)
    _, letters = await email_run(store, mail)
    _, texts = await new_run(store, sms)
    await reserve(store, letters.id, [(1, "s", mails(mail, [1, 2]))])
    await reserve(store, texts.id, [(1, "s", [message(1, sms.ids[0], sms.phones[0]),
                                              message(2, sms.ids[1], sms.phones[0])])])
    _, again = await email_run(store, mail, name="again")
    await reserve(store, again.id, [(1, "s", mails(mail, [1]))])
    contact = Policy(max_messages=5, period_days=1, scope="contact")
    asked = [*mail.emails, *sms.phones]
    assert await store.policy_counts(contact, mail.resource_id, asked, time.time()) == {
        mail.emails[0]: 2, mail.emails[1]: 1, sms.phones[0]: 2}


# -- events of an email run ----------------------------------------------------------------


async def test_an_email_run_writes_email_events_and_an_sms_run_sms_events(
    store: Store,
) -> None:
    mail = await make_mail(store, 2)
    mailing, run = await email_run(store, mail)
    (link,) = await store.ensure_links(run.id, ["https://x.example"], 0)
    await send(store, run, mails(mail, [1, 2]))
    events = await store.events(run_id=run.id)
    assert [(e.kind, e.seq, e.profile_id, e.phone, e.mailing_id) for e in events] == [
        ("send", 1, mail.ids[0], mail.emails[0], mailing.id),
        ("send", 2, mail.ids[1], mail.emails[1], mailing.id)]
    await store.apply_receipts("gw", [Receipt("p1", "delivered"),
                                      Receipt("p2", "undelivered", error="550 no such user")],
                               senders=["s"], now=T)
    await store.add_clicks([Click(link.id, 1, T + 1, None, None, False)])
    assert await kinds(store, run.id) == ["send", "send", "deliv", "undeliv", "click",
                                          "uclick"]
    (row,) = await store.report_channel(ALL)
    assert (row.recipients, row.sent, row.delivered, row.undelivered, row.clicks,
            row.unique_clicks) == (2, 2, 1, 1, 1, 1)
    # an SMS run on the same store: SMS events
    news = await store.resource_id("news")
    await store.subscribe(news, mail.ids[0], phone(1))
    _, sms = await store.create_run(name="sms", resource="news",
                                    source=AudienceSource("list", mail.database_id),
                                    template="hi", limit=None)
    msg = Message(1, "r-1", mail.ids[0], phone(1), "s", "hi", 1)
    await reserve(store, sms.id, [(1, "s", [msg])])
    await store.record(sms.id, 1, "s", [msg], [Outcome(1, "sent", provider_id="q1")])
    assert await kinds(store, sms.id) == ["send_sms"]


async def test_one_click_unsubscribe_of_an_email_recipient_changes_its_email_subscription(
    store: Store,
) -> None:
    mail = await make_mail(store, 2)
    _, run = await email_run(store, mail)
    await send(store, run, mails(mail, [1, 2]))
    ref = await store.recipient_ref(run.id, 1)
    assert ref is not None
    assert (ref.resource, ref.phone, ref.subscribed) == ("letters", mail.emails[0], True)
    assert await store.unsubscribe_recipient(run.id, 1, at=T) == 1
    assert await statuses(store, mail) == ["unsubscribed", "subscribed"]
    ref = await store.recipient_ref(run.id, 1)
    assert ref is not None and not ref.subscribed
    assert await store.unsubscribe_recipient(run.id, 1, at=T + 1) == 0
    (event,) = [e for e in await store.events(run_id=run.id) if e.kind not in ("send",)]
    assert (event.kind, event.seq, event.phone, event.at) == ("unsub", 1, mail.emails[0], T)
    (row,) = await store.report_channel(ALL)
    assert row.unsubscribed == 1
    # a STOP reply is SMS only: it touches no email subscription
    assert await store.unsubscribe_reply(mail.emails[1], [mail.resource_id], at=T) == 0
    assert await statuses(store, mail) == ["unsubscribed", "subscribed"]


# -- opens ---------------------------------------------------------------------------------


async def test_a_persons_first_open_is_unique_bots_prefetches_and_strangers_count_nothing(
    store: Store,
) -> None:
    mail = await make_mail(store, 2)
    _, run = await email_run(store, mail)
    await send(store, run, mails(mail, [1, 2]), sender="alpha")
    report = await store.add_opens([
        Open(run.id, 1, T, "10.0.0.1", "Mozilla/5.0", False),
        Open(run.id, 1, T + 60, "10.0.0.1", "Mozilla/5.0", False),
        Open(run.id, 2, T + 5, "17.0.0.1", "Mozilla/5.0", False, prefetch=True),
        Open(run.id, 2, T + 6, "66.249.0.1", "Googlebot", True),
        Open(run.id, 99, T, None, None, False),  # no such message
        Open(run.id + 1000, 1, T, None, None, False),  # no such run
    ])
    assert report == OpenReport(recorded=4, unique=1, unknown=2)
    opens = [e for e in await store.events(run_id=run.id) if e.kind != "send"]
    assert [(e.kind, e.seq, e.at, e.phone, e.sender) for e in opens] == [
        ("open", 1, T, mail.emails[0], "alpha"),
        ("uopen", 1, T, mail.emails[0], "alpha"),
        ("open", 1, T + 60, mail.emails[0], "alpha")]
    assert all(e.message_id == f"{run.uid}-1" for e in opens)
    # a later open of message 1 is not unique; message 2's first by a person is
    again = await store.add_opens([Open(run.id, 1, T + 300, None, None, False),
                                   Open(run.id, 2, T + 300, None, None, False)])
    assert again == OpenReport(recorded=2, unique=1, unknown=0)
    (row,) = await store.report_channel(ALL)
    assert (row.opens, row.unique_opens) == (4, 2)
    assert await store.add_opens([]) == OpenReport(0, 0, 0)


# -- bounces and complaints ----------------------------------------------------------------


async def test_bounces_and_complaints_change_subscriptions_suppress_and_count_once(
    store: Store,
) -> None:
    mail = await make_mail(store, 4)
    _, run = await email_run(store, mail)
    await send(store, run, mails(mail, [1, 2, 3]))
    bounces = [
        # credited by Herald's id, the address as the DSN spells it
        Bounce("hard", "User1@EXAMPLE.com", id=f"{run.uid}-1",
               error="5.1.1 smtp; 550 5.1.1 user unknown"),
        # credited to the last message sent to the address
        Bounce("soft", mail.emails[1], error="4.2.2 mailbox full"),
        Bounce("complaint", mail.emails[2]),
        Bounce("hard", "nobody@example.com"),  # no message, no subscription
    ]
    report = await store.apply_bounces(bounces, [mail.resource_id], at=T)
    assert report == BounceReport(hardbounced=1, soft=1, complainers=1, unknown=1)
    assert await statuses(store, mail) == ["hardbounced", "subscribed", "complainer",
                                           "subscribed"]
    events = [e for e in await store.events(run_id=run.id) if e.kind != "send"]
    assert [(e.kind, e.seq, e.phone, e.error, e.at, e.message_id) for e in events] == [
        ("hbounce", 1, mail.emails[0], "5.1.1 smtp; 550 5.1.1 user unknown", T,
         f"{run.uid}-1"),
        ("sbounce", 2, mail.emails[1], "4.2.2 mailbox full", T, f"{run.uid}-2"),
        ("complain", 3, mail.emails[2], None, T, f"{run.uid}-3")]
    (row,) = await store.report_channel(ALL)
    assert (row.hard_bounced, row.soft_bounced, row.complaints) == (1, 1, 1)

    # the same report twice: nothing more
    assert await store.apply_bounces(bounces, [mail.resource_id], at=T + 1) == BounceReport(
        hardbounced=0, soft=0, complainers=0, unknown=1)
    assert len(await store.events(run_id=run.id)) == 3 + 3
    (row,) = await store.report_channel(ALL)
    assert (row.hard_bounced, row.soft_bounced, row.complaints) == (1, 1, 1)

    # the complainer's address is on the global list "complaints"
    (complaints,) = [s for s in await store.suppression_lists() if s["name"] == "complaints"]
    assert complaints["global"] and complaints["counts"] == {"email": 1}

    # the next run: the hard bounce is not subscribed, the complainer suppressed
    _, nxt = await email_run(store, mail, name="next")
    rows = audience(await store.audience_chunk(mail.source(), mail.resource_id, 0, 10))
    assert [r.phone for r in rows] == [None, mail.emails[1], None, mail.emails[3]]
    suppressed, _ = await store.lookup(nxt.id, mail.emails, [])
    assert suppressed == {mail.emails[2]}


async def test_a_bounce_for_another_resource_or_a_subscribed_address_with_no_message(
    store: Store,
) -> None:
    mail = await make_mail(store, 2)
    _, run = await email_run(store, mail)
    await send(store, run, mails(mail, [1]))
    other = await store.resource_id("elsewhere")
    # the gateway sends for another resource only: neither the message nor the address
    assert await store.apply_bounces([Bounce("hard", mail.emails[0], id=f"{run.uid}-1")],
                                     [other], at=T) == BounceReport(0, 0, 0, 1)
    assert await statuses(store, mail) == ["subscribed", "subscribed"]
    # an address subscribed but sent nothing: its status changes, its event names no
    # message and counts under no run
    report = await store.apply_bounces([Bounce("hard", mail.emails[1])], [mail.resource_id],
                                       at=T)
    assert report == BounceReport(1, 0, 0, 0)
    assert await statuses(store, mail) == ["subscribed", "hardbounced"]
    (event,) = [e for e in await store.events() if e.kind == "hbounce"]
    assert (event.run_id, event.seq, event.profile_id, event.phone) == (
        None, None, mail.ids[1], mail.emails[1])
    (row,) = await store.report_channel(ALL)
    assert row.hard_bounced == 0
    assert await store.apply_bounces([], [mail.resource_id], at=T) == BounceReport(0, 0, 0, 0)
