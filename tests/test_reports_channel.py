"""The channel report of a channel: ``herald report ... --channel email|sms`` and the API's
``channel=``, which count only that channel's mailings; the email report's opens, bounces
and complaints and its rates."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from engine.cli import main
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Bounce, Receipt
from engine.reports import channel_report, is_email, report_filter
from engine.store.base import ChannelRow, Click, Open, ReportFilter, Store
from engine.store.models import AudienceSource
from engine.testing import in_workspace, write_config
from tests.test_opens import (
    EMAIL_CONFIG,
    GMAIL_PROXY,
    IPHONE_MAIL,
    MPP_AGENT,
    MPP_IP,
    EmailSite,
    open_email_site,
)
from tests.test_reports import FakeReports

EMAIL_COUNTS = ("opens", "unique_opens", "hard_bounced", "soft_bounced", "complaints")
@pytest.fixture
async def site(open_herald: Callable[..., Any], any_store: str) -> AsyncIterator[EmailSite]:
    async with open_email_site(open_herald) as site:
        yield site


SMS_COLUMNS = ("recipients", "sent", "delivered", "undelivered", "failed", "unknown",
               "segments", "clicks", "unique_clicks", "unsubscribed", "control",
               "delivery_rate", "ctr")


# -- the report's columns and rates ----------------------------------------------------


def row(key: Any = None, **counts: int) -> ChannelRow:
    base = dict.fromkeys(("recipients", "sent", "delivered", "undelivered", "failed",
                          "unknown", "segments", "clicks", "unique_clicks",
                          "unsubscribed"), 0)
    return ChannelRow(key, **{**base, **counts})


@pytest.mark.anyio
async def test_the_email_report_has_the_email_counts_and_rates() -> None:
    fake = FakeReports([row(recipients=10, sent=10, delivered=8, unique_clicks=2, opens=9,
                            unique_opens=4, hard_bounced=1, soft_bounced=2, complaints=1)])
    report = await channel_report(fake.store(), ReportFilter(channel="email"))
    assert report.columns == ("recipients", "sent", "delivered", "undelivered", "failed",
                              "unknown", "segments", "clicks", "unique_clicks",
                              "unsubscribed", "control", *EMAIL_COUNTS, "delivery_rate",
                              "ctr", "open_rate", "ctor")
    [line] = report.rows
    assert list(line) == list(report.columns)
    assert {k: line[k] for k in (*EMAIL_COUNTS, "open_rate", "ctor", "ctr")} == {
        "opens": 9, "unique_opens": 4, "hard_bounced": 1, "soft_bounced": 2,
        "complaints": 1, "open_rate": 0.5, "ctor": 0.5, "ctr": 0.25}
    # no opens: no click-to-open rate
    report = await channel_report(FakeReports([row(sent=3)]).store(),
                                  ReportFilter(channel="email"))
    assert (report.rows[0]["open_rate"], report.rows[0]["ctor"]) == (0.0, None)
    # no receipts (an SMTP relay): what did not bounce hard reached its mailbox
    report = await channel_report(FakeReports([row(
        sent=10, unique_clicks=2, unique_opens=4, hard_bounced=2)]).store(),
        ReportFilter(channel="email"))
    assert {k: report.rows[0][k] for k in ("delivery_rate", "open_rate", "ctr")} == {
        "delivery_rate": 0.8, "open_rate": 0.5, "ctr": 0.25}
    # nothing sent: no rate at all
    report = await channel_report(FakeReports([row()]).store(), ReportFilter(channel="email"))
    assert (report.rows[0]["delivery_rate"], report.rows[0]["open_rate"]) == (None, None)


@pytest.mark.anyio
async def test_the_sms_report_keeps_its_columns() -> None:
    fake = FakeReports([row(recipients=1, sent=1)])
    for where in (ReportFilter(), ReportFilter(channel="sms")):
        report = await channel_report(fake.store(), where)
        assert report.columns == SMS_COLUMNS


def test_a_report_is_of_email_by_its_channel_or_its_resource() -> None:
    class Res(NamedTuple):
        channel: str

    resources = {"letters": Res("email"), "news": Res("sms")}
    assert is_email(report_filter(channel="email"), resources)
    assert not is_email(report_filter(channel="sms", resource="letters"), resources)
    assert is_email(report_filter(resource="letters"), resources)
    assert not is_email(report_filter(resource="news"), resources)
    assert not is_email(report_filter(), resources)


# -- on both stores ----------------------------------------------------------------------


class Seeded(NamedTuple):
    sms: int
    email: int


async def seed(store: Store) -> Seeded:
    """An SMS mailing of 2 recipients (both sent, one click) and an email mailing of 5,
    all sent, 2 delivered; 3 people's opens of 2 messages (and a prefetch and a bot's), 1
    click, a hard bounce, a soft one and a complaint."""
    database_id = await store.database_id("main", create=True)
    sms, run = await store.create_run(name="sms", resource="news", template="x", limit=None,
                                      source=AudienceSource("list", database_id))
    texts = [Message(seq, f"{run.uid}-{seq}", seq, f"+44790000000{seq}", "s1", "x", 1)
             for seq in (1, 2)]
    await store.record(run.id, 1, "s1", texts, [
        Outcome(m.seq, "sent", provider_id=f"sms-{m.seq}") for m in texts])
    [link] = await store.ensure_links(run.id, ["https://shop.example/sale"], 0)
    now = time.time()
    await store.add_clicks([Click(link.id, 1, now, "192.0.2.1", "Mozilla/5.0", False)])

    email, run = await store.create_run(
        name="letter", resource="letters", template="<p>x</p>", limit=None,
        source=AudienceSource("list", database_id, channel="email"))
    addresses = [f"reader{seq}@example.com" for seq in range(1, 6)]
    letters = [Message(seq, f"{run.uid}-{seq}", 10 + seq, addresses[seq - 1], "m1",
                       "<p>x</p>", 1) for seq in range(1, 6)]
    await store.record(run.id, 1, "m1", letters, [
        Outcome(m.seq, "sent", provider_id=f"mail-{m.seq}") for m in letters])
    await store.apply_receipts("mail", [Receipt("mail-1", "delivered"),
                                        Receipt("mail-2", "delivered")], senders=["m1"])
    await store.add_opens([
        Open(run.id, 1, now, "203.0.113.7", IPHONE_MAIL, False),
        Open(run.id, 1, now, "66.249.84.1", GMAIL_PROXY, False),
        Open(run.id, 2, now, "203.0.113.8", IPHONE_MAIL, False),
        Open(run.id, 3, now, MPP_IP, MPP_AGENT, False, True),
        Open(run.id, 4, now, "192.0.2.9", "Googlebot/2.1", True),
    ])
    [link] = await store.ensure_links(run.id, ["https://shop.example/letter"], 0)
    await store.add_clicks([Click(link.id, 2, now, "203.0.113.8", IPHONE_MAIL, False)])
    letters_id = await store.resource_id("letters")
    await store.apply_bounces([
        Bounce("hard", addresses[2], id=f"{run.uid}-3", error="5.1.1 user unknown"),
        Bounce("soft", addresses[3], id=f"{run.uid}-4", error="4.2.2 mailbox full"),
        Bounce("complaint", addresses[4], id=f"{run.uid}-5"),
    ], [letters_id], at=now)
    return Seeded(sms.id, email.id)


SMS_ROW = {"recipients": 2, "sent": 2, "delivered": 0, "undelivered": 0, "failed": 0,
           "unknown": 0, "segments": 2, "clicks": 1, "unique_clicks": 1, "unsubscribed": 0,
           "control": 0, "delivery_rate": 0.0, "ctr": None}
EMAIL_ROW = {"recipients": 5, "sent": 5, "delivered": 2, "undelivered": 0, "failed": 0,
             "unknown": 0, "segments": 5, "clicks": 1, "unique_clicks": 1,
             "unsubscribed": 0, "control": 0, "opens": 3, "unique_opens": 2,
             "hard_bounced": 1, "soft_bounced": 1, "complaints": 1, "delivery_rate": 0.4,
             "ctr": 0.5, "open_rate": 1.0, "ctor": 0.5}


@pytest.fixture
def workspace(tmp_path: Path, any_store: str) -> tuple[Path, Seeded]:
    config = write_config(tmp_path, driver="null", extra=EMAIL_CONFIG)
    return config, in_workspace(config, seed)


def rows_of(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> Any:
    capsys.readouterr()
    code = main(["--config", str(config), "report", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_the_channel_report_of_email_counts_its_mailings_only(
    workspace: tuple[Path, Seeded], capsys: pytest.CaptureFixture[str],
) -> None:
    config, ids = workspace
    assert rows_of(capsys, config, "channel", "--channel", "email") == [EMAIL_ROW]
    assert rows_of(capsys, config, "channel", "--channel", "sms") == [SMS_ROW]
    # an email resource's report is email's
    assert rows_of(capsys, config, "channel", "--resource", "letters") == [EMAIL_ROW]
    [line] = rows_of(capsys, config, "channel", "--channel", "email", "--by", "mailing")
    assert (line["mailing_id"], line["mailing"], line["opens"]) == (ids.email, "letter", 3)
    # the click map of a channel
    assert [c["url"] for c in rows_of(capsys, config, "clicks", "--channel", "email")] == [
        "https://shop.example/letter"]


def test_a_bad_channel_exits_2_naming_the_option(
    workspace: tuple[Path, Seeded], capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = workspace
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "report", "channel", "--channel", "fax"])
    assert exit_.value.code == 2
    assert "argument --channel: invalid choice" in capsys.readouterr().err


@pytest.mark.anyio
async def test_the_api_report_takes_a_channel(site: EmailSite) -> None:
    await seed(site.store)
    r = await site.client.get("/api/v1/reports/channel", headers=site.auth(),
                              params={"channel": "email"})
    assert r.status_code == 200, r.text
    assert r.json() == {"rows": [EMAIL_ROW]}
    r = await site.client.get("/api/v1/reports/channel", headers=site.auth(),
                              params={"channel": "sms"})
    assert r.json() == {"rows": [SMS_ROW]}
    r = await site.client.get("/api/v1/reports/channel", headers=site.auth(),
                              params={"channel": "email", "format": "csv"})
    assert r.text.splitlines()[0].endswith(
        "opens,unique_opens,hard_bounced,soft_bounced,complaints,delivery_rate,ctr,"
        "open_rate,ctor")
    r = await site.client.get("/api/v1/reports/channel", headers=site.auth(),
                              params={"channel": "fax"})
    assert r.status_code == 400 and "channel" in r.text
