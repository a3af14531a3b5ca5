"""Bounces and complaints through ``POST /api/v1/inbound/{gateway}``: a bounce mailbox
posting DSNs and ARF reports to an ``smtp`` gateway, Mailgun's webhooks to a ``mailgun``
one; what they do to the subscriptions, the events and the suppression list, by the rule
of the gateway's resources; and what the route refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.core.prepare import AudienceRow
from engine.store.models import AudienceSource
from tests.fakes.mailgun import FakeMailgun
from tests.test_opens import EmailSite, open_email_site

pytestmark = pytest.mark.anyio


@pytest.fixture
async def site(open_herald: Callable[..., Any], any_store: str) -> AsyncIterator[EmailSite]:
    async with open_email_site(open_herald) as site:
        yield site

SECRET = "bounce-secret-0123456789"
FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
#: The addresses the DSN and ARF fixtures speak of.
UNKNOWN_USER = "nobody@example.net"  # postfix_user_unknown.eml: 5.1.1
DELAYED = "slow@example.org"  # postfix_delayed.eml: delayed
YAHOO_READER = "reader@yahoo.com"  # arf_yahoo.eml: abuse
OTHER = "other@example.com"
ADDRESSES = [UNKNOWN_USER, DELAYED, YAHOO_READER, OTHER]


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for gateway in ("MAIL", "MG", "GW"):
        monkeypatch.setenv(f"HERALD_DLR_SECRET_{gateway}", SECRET)


def report(name: str, herald_id: str | None = None) -> bytes:
    """A fixture mail, the Herald id it names made ``herald_id`` (one of our messages)."""
    raw = (FIXTURES / name).read_bytes()
    if herald_id is not None:
        for n in (7, 8, 99, 314):
            raw = raw.replace(f"a1b2c3d4e5-{n}".encode(), herald_id.encode())
    return raw


async def post(site: EmailSite, body: bytes, gateway: str = "mail", *,
               headers: dict[str, str] | None = None,
               secret: str | None = SECRET) -> httpx.Response:
    sent = {"Content-Type": "message/rfc822", **(headers or {})}
    if secret is not None:
        sent["X-Herald-Secret"] = secret
    return await site.client.post(f"/api/v1/inbound/{gateway}", content=body, headers=sent)


def counts(hardbounced: int = 0, soft: int = 0, complainers: int = 0, unknown: int = 0,
           invalid: int = 0, received: int = 1) -> dict[str, int]:
    return {"received": received, "hardbounced": hardbounced, "soft": soft,
            "complainers": complainers, "unknown": unknown, "invalid": invalid}


async def sent_to(site: EmailSite, addresses: list[str] = ADDRESSES,
                  resource: str = "letters", sender: str = "m1") -> tuple[int, dict[str, int]]:
    """A run of ``resource`` to ``addresses``: (run id, address -> seq)."""
    run_id, sent = await site.send(await site.subscribe(addresses, resource=resource),
                                   resource=resource, sender=sender)
    return run_id, {email: seq for seq, email in sent.items()}


async def suppressed(site: EmailSite) -> dict[str, int]:
    """The global list ``complaints``' counts by kind."""
    lists = {row["name"]: row for row in await site.store.suppression_lists()}
    assert lists["complaints"]["global"]
    return dict(lists["complaints"]["counts"])


# -- DSNs and ARF reports from a bounce mailbox -------------------------------------------


async def test_a_dsn_makes_its_address_hardbounced_once(site: EmailSite) -> None:
    run_id, seqs = await sent_to(site)
    herald_id = site.message_id(run_id, seqs[UNKNOWN_USER])
    body = report("postfix_user_unknown.eml", herald_id)
    # the mailbox passes on the VERP address it was delivered to
    verp = {"X-Original-To": f"bounce+{herald_id}@bounces.example.com"}
    r = await post(site, body, headers=verp)
    assert r.status_code == 200, r.text
    assert r.json() == counts(hardbounced=1)
    assert await site.statuses(UNKNOWN_USER) == ["hardbounced"]
    assert [await site.statuses(a) for a in (DELAYED, YAHOO_READER, OTHER)] == [
        ["subscribed"]] * 3
    [event] = await site.events("hbounce")
    assert (event.run_id, event.seq, event.phone) == (run_id, seqs[UNKNOWN_USER], UNKNOWN_USER)
    assert event.error is not None and "5.1.1" in event.error
    # the same report again (a mailbox that posts twice) changes nothing more
    r = await post(site, body, headers=verp)
    assert r.status_code == 200 and r.json()["hardbounced"] == 0
    assert len(await site.events("hbounce")) == 1
    # the next mailing's audience has no address for it
    source = AudienceSource("list", await site.store.database_id("main"), channel="email")
    rows = await site.store.audience_chunk(source, await site.store.resource_id("letters"),
                                           0, 100)
    assert sorted(AudienceRow(*r).phone or "" for r in rows) == sorted(
        ["", *(set(ADDRESSES) - {UNKNOWN_USER})])


async def test_a_dsn_with_no_id_of_ours_is_credited_to_the_last_message_to_the_address(
    site: EmailSite,
) -> None:
    run_id, seqs = await sent_to(site)
    r = await post(site, report("postfix_user_unknown.eml"))  # a1b2c3d4e5-7: none of ours
    assert r.json() == counts(hardbounced=1)
    [event] = await site.events("hbounce")
    assert (event.run_id, event.seq) == (run_id, seqs[UNKNOWN_USER])


async def test_a_delay_is_a_soft_bounce_that_changes_no_status(site: EmailSite) -> None:
    run_id, seqs = await sent_to(site)
    r = await post(site, report("postfix_delayed.eml", site.message_id(run_id, seqs[DELAYED])))
    assert r.status_code == 200 and r.json() == counts(soft=1)
    assert await site.statuses(DELAYED) == ["subscribed"]
    [event] = await site.events("sbounce")
    assert (event.run_id, event.seq, event.phone) == (run_id, seqs[DELAYED], DELAYED)


async def test_an_arf_complaint_makes_a_complainer_and_suppresses_the_address(
    site: EmailSite,
) -> None:
    run_id, seqs = await sent_to(site)
    herald_id = site.message_id(run_id, seqs[YAHOO_READER])
    r = await post(site, report("arf_yahoo.eml", herald_id))
    assert r.status_code == 200 and r.json() == counts(complainers=1)
    assert await site.statuses(YAHOO_READER) == ["complainer"]
    [event] = await site.events("complain")
    assert (event.run_id, event.seq, event.phone) == (run_id, seqs[YAHOO_READER], YAHOO_READER)
    assert await suppressed(site) == {"email": 1}


async def test_a_redacted_complaint_finds_its_recipient_by_the_message_id(
    site: EmailSite,
) -> None:
    run_id, seqs = await sent_to(site)
    herald_id = site.message_id(run_id, seqs[OTHER])
    r = await post(site, report("arf_redacted.eml", herald_id))
    assert r.status_code == 200, r.text
    assert r.json() == counts(complainers=1)
    assert await site.statuses(OTHER) == ["complainer"]


async def test_a_bounce_changes_only_the_resources_of_its_gateway(
    site: EmailSite,
) -> None:
    await sent_to(site)
    await sent_to(site, resource="digest", sender="g1")  # sent through Mailgun
    r = await post(site, report("postfix_user_unknown.eml"))  # to the smtp gateway
    assert r.json() == counts(hardbounced=1)
    assert await site.statuses(UNKNOWN_USER) == ["hardbounced"]
    assert await site.statuses(UNKNOWN_USER, "digest") == ["subscribed"]


async def test_reports_of_no_address_or_message_of_ours_are_unknown(
    site: EmailSite,
) -> None:
    await sent_to(site, [OTHER])
    r = await post(site, report("postfix_user_unknown.eml"))
    assert r.status_code == 200 and r.json() == counts(unknown=1)
    assert await site.events("hbounce") == []
    # mail that is no report (an autoreply, a read receipt) holds no bounce
    for name in ("autoreply.eml", "read_receipt.eml"):
        r = await post(site, report(name))
        assert r.status_code == 200 and r.json() == counts(received=0)


@pytest.mark.parametrize("name", ["dsn_without_status.eml"])
async def test_a_malformed_report_is_a_400_naming_the_body(
    site: EmailSite, name: str,
) -> None:
    await sent_to(site)
    r = await post(site, report(name))
    assert (r.status_code, r.json()["field"]) == (400, "body"), r.json()
    assert await site.statuses(UNKNOWN_USER) == ["subscribed"]


async def test_the_route_is_authenticated_and_takes_bounces_by_post_only(
    site: EmailSite,
) -> None:
    await sent_to(site)
    body = report("postfix_user_unknown.eml")
    assert (await post(site, body, secret=None)).status_code == 401
    assert (await post(site, body, secret="wrong-secret-0000000000")).status_code == 401
    r = await post(site, body, "nope")
    assert (r.status_code, r.json()["field"]) == (404, "gateway")
    r = await site.client.get(f"/api/v1/inbound/mail?secret={SECRET}")
    assert (r.status_code, r.json()["field"]) == (400, "body")
    assert await site.statuses(UNKNOWN_USER) == ["subscribed"]


# -- Mailgun's webhooks -----------------------------------------------------------------


async def test_mailguns_failed_and_complained_webhooks(site: EmailSite) -> None:
    await site.subscribe([UNKNOWN_USER])  # to letters, sent through the smtp gateway
    run_id, _ = await sent_to(site, resource="digest", sender="g1")
    fake = FakeMailgun()
    hard = fake.webhook("failed", f"<{site.message_id(run_id, 1)}@example.com>",
                        severity="permanent", recipient=UNKNOWN_USER)
    r = await site.client.post("/api/v1/inbound/mg", content=hard[0], headers={
        **hard[1], "X-Herald-Secret": SECRET})
    assert r.status_code == 200, r.text
    assert r.json() == counts(hardbounced=1)
    assert await site.statuses(UNKNOWN_USER, "digest") == ["hardbounced"]
    soft = fake.webhook("failed", "x@mg", severity="temporary", code=452,
                        text="4.2.2 Mailbox full", reason="generic", recipient=DELAYED)
    r = await site.client.post(f"/api/v1/inbound/mg?secret={SECRET}", content=soft[0],
                               headers=soft[1])
    assert r.json() == counts(soft=1)
    complaint = fake.webhook("complained", "y@mg", recipient="reader@YAHOO.com")
    r = await site.client.post(f"/api/v1/inbound/mg?secret={SECRET}", content=complaint[0],
                               headers=complaint[1])
    # the address as the vendor wrote it, normalised: the domain is lowercased
    assert r.status_code == 200, r.text
    assert r.json() == counts(complainers=1)
    assert await site.statuses(YAHOO_READER, "digest") == ["complainer"]
    opened = fake.webhook("opened", "z@mg", recipient=OTHER)
    r = await site.client.post(f"/api/v1/inbound/mg?secret={SECRET}", content=opened[0],
                               headers=opened[1])
    assert r.json() == counts(received=0)
    assert [await site.statuses(a, "digest") for a in (DELAYED, OTHER)] == [
        ["subscribed"], ["subscribed"]]
    assert await site.statuses(UNKNOWN_USER) == ["subscribed"]  # letters: not Mailgun's


async def test_a_bounce_of_no_email_address_is_dropped_and_counted(
    site: EmailSite,
) -> None:
    await sent_to(site, resource="digest", sender="g1")
    body, headers = FakeMailgun().webhook("failed", "x@mg", recipient="not an address")
    r = await site.client.post(f"/api/v1/inbound/mg?secret={SECRET}", content=body,
                               headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == counts(invalid=1)


async def test_a_webhook_with_a_wrong_signature_is_a_400_naming_its_field(
    site: EmailSite,
) -> None:
    await sent_to(site, resource="digest", sender="g1")
    body, headers = FakeMailgun().webhook("failed", "x@mg", recipient=UNKNOWN_USER,
                                          key="another key")
    r = await site.client.post(f"/api/v1/inbound/mg?secret={SECRET}", content=body,
                               headers=headers)
    assert r.status_code == 400
    assert r.json()["field"] is not None and r.json()["field"] != "gateway"
    assert await site.statuses(UNKNOWN_USER, "digest") == ["subscribed"]
