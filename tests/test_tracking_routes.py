"""The tracking domain's public routes: short links (302 and the click), unsubscribe pages,
the click writer's batches and its last write on shutdown, the bot verdicts."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar
from trio.testing import MockClock

from engine.api import TokenStore, create_app
from engine.core.codes import Codec
from engine.core.states import Outcome
from engine.runner import Herald
from engine.service import MailingService
from engine.simulator import GatewaySimulator
from engine.store.base import (
    Click,
    ClickReport,
    EventRow,
    LinkRow,
    LinkStat,
    ReportFilter,
    Store,
)
from engine.testing import FakeGateway, create_token, in_workspace
from engine.tracking.bots import BotDetector
from engine.tracking.clicks import ClickWriter
from engine.tracking.links import Resolver, location
from tests.servers import free_port, wait_healthy
from tests.store.helpers import make_world, message, new_run

pytestmark = pytest.mark.anyio

#: The trio backend with a fake clock that jumps ahead whenever every task waits.
FAKE_CLOCK = pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])

BROWSER = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
           " (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")


def click(n: int, *, bot: bool = False) -> Click:
    return Click(1, n, 1_760_000_000.0 + n, "127.0.0.1", BROWSER, bot)


class FakeClicks:
    """A store's ``add_clicks``: keeps each batch; can fail, or take time, when told."""

    def __init__(self, *, failures: int = 0, delay: float = 0.0) -> None:
        self.batches: list[list[Click]] = []
        self.failures = failures
        self.delay = delay

    async def add_clicks(self, clicks: Sequence[Click]) -> ClickReport:
        if self.delay:
            await anyio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        self.batches.append(list(clicks))
        return ClickReport(len(clicks), sum(1 for c in clicks if not c.bot), 0)

    @property
    def written(self) -> list[Click]:
        return [c for batch in self.batches for c in batch]


async def until(check: Callable[[], object]) -> None:
    with anyio.fail_after(60):
        while True:
            if check():
                return
            await anyio.sleep(0.01)


# -- the click writer ---------------------------------------------------------------------


@FAKE_CLOCK
async def test_a_full_batch_is_written_at_once_and_the_rest_on_the_way_out() -> None:
    store = FakeClicks()
    writer = ClickWriter(store, interval=3600, batch=500,  # type: ignore[arg-type]
                         transaction=500)
    async with writer.running():
        await anyio.sleep(1)
        start = anyio.current_time()
        for n in range(499):
            writer.record(click(n))
        await anyio.sleep(1)
        assert store.batches == []
        writer.record(click(499))
        await until(lambda: len(store.batches) == 1)
        assert anyio.current_time() - start < 2  # not the hour's tick: the full batch
        for n in range(500, 700):
            writer.record(click(n))
        await anyio.sleep(60)
        assert writer.statistics().buffered == 200
    assert [len(b) for b in store.batches] == [500, 200]
    assert store.written == [click(n) for n in range(700)]
    stats = writer.statistics()
    assert (stats.buffered, stats.written, stats.batches, stats.dropped) == (0, 700, 2, 0)


async def test_a_flush_writes_a_transaction_at_a_time() -> None:
    store = FakeClicks()
    writer = ClickWriter(store, interval=3600, batch=500)  # type: ignore[arg-type]
    for n in range(250):
        writer.record(click(n))
    assert await writer.flush()
    assert [len(b) for b in store.batches] == [100, 100, 50]


@FAKE_CLOCK
async def test_clicks_wait_at_most_the_interval() -> None:
    store = FakeClicks()
    writer = ClickWriter(store, interval=0.5, batch=500)  # type: ignore[arg-type]
    async with writer.running():
        await anyio.sleep(0.2)
        writer.record(click(1))
        writer.record(click(2))
        await anyio.sleep(0.25)  # 0.45 s after the writer's last tick
        assert store.batches == []
        await anyio.sleep(0.1)
        assert store.batches == [[click(1), click(2)]]


@FAKE_CLOCK
async def test_a_failed_write_keeps_its_clicks_for_the_next_try() -> None:
    store = FakeClicks(failures=2)
    writer = ClickWriter(store, interval=0.5, batch=10, transaction=10)  # type: ignore[arg-type]
    async with writer.running():
        for n in range(3):
            writer.record(click(n))
        await until(lambda: store.batches)
    assert store.written == [click(n) for n in range(3)]
    stats = writer.statistics()
    assert (stats.failed_writes, stats.written, stats.dropped) == (2, 3, 0)


@FAKE_CLOCK
async def test_a_stop_during_a_write_neither_loses_nor_doubles_a_click() -> None:
    store = FakeClicks(delay=1.0)
    writer = ClickWriter(store, interval=0.5, batch=2, transaction=2)  # type: ignore[arg-type]
    async with writer.running():
        for n in range(5):
            writer.record(click(n))
        await anyio.sleep(0.1)  # the first write is under way
    assert store.written == [click(n) for n in range(5)]


@FAKE_CLOCK
async def test_the_last_write_failing_says_how_many_were_lost() -> None:
    store = FakeClicks(failures=1)
    writer = ClickWriter(store, interval=3600, batch=10, transaction=10)  # type: ignore[arg-type]
    async with writer.running():
        writer.record(click(1))
    assert store.written == []
    stats = writer.statistics()
    assert (stats.dropped, stats.buffered, stats.failed_writes) == (1, 0, 1)


async def test_past_capacity_clicks_are_dropped_and_counted() -> None:
    store = FakeClicks()
    writer = ClickWriter(store, interval=3600, batch=2,  # type: ignore[arg-type]
                         transaction=2, capacity=4)
    for n in range(6):  # the writer is not running: nothing drains the buffer
        writer.record(click(n))
    assert writer.statistics().dropped == 2
    assert await writer.flush()
    assert store.written == [click(n) for n in range(4)]


# -- what a click is ----------------------------------------------------------------------


@pytest.mark.parametrize("agent", [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.23.20.0 A", "TelegramBot (like TwitterBot)", "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Discordbot/2.0",
    "SkypeUriPreview Preview/0.5", "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "curl/8.5.0", "", "   ", None,
])
def test_crawlers_link_previews_and_no_agent_are_bots(agent: str | None) -> None:
    assert BotDetector().is_bot(agent)


def test_browsers_are_people_and_verdicts_are_remembered() -> None:
    bots = BotDetector(size=2)
    desktop = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like"
               " Gecko) Chrome/120.0.0.0 Safari/537.36")
    assert not bots.is_bot(BROWSER)
    assert not bots.is_bot(desktop)
    assert bots.is_bot("Twitterbot/1.0")
    assert not bots.is_bot(desktop)


class FakeLinks:
    """A store's link lookups, counting how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.links = {7: LinkRow(7, 1, URL), 8: LinkRow(8, 1, None),
                      # the links of a cluster chunk's seqs, from 2**32
                      20: LinkRow(20, 2, URL, 2**32), 21: LinkRow(21, 2, None, 2**32)}
        self.slots = {(8, 3): "https://example.com/данные?id=3",
                      (21, 2**32 + 3): "https://example.com/chunk?id=3"}

    async def tracking_secret(self) -> bytes:
        return b"k" * 32

    async def link(self, link_id: int) -> LinkRow | None:
        self.asked += 1
        return self.links.get(link_id)

    async def data_link_url(self, link_id: int, seq: int) -> str | None:
        self.asked += 1
        return self.slots.get((link_id, seq))


async def test_codes_resolve_to_template_links_and_data_slots_each_looked_up_once() -> None:
    store = FakeLinks()
    resolver = Resolver(store)  # type: ignore[arg-type]
    codec = Codec(b"k" * 32, b"link")
    for _ in range(3):
        target = await resolver.target(codec.encode(7, 5))
        assert target == (7, 5, URL, URL.encode())
        slot = await resolver.target(codec.encode(8, 3))
        assert slot is not None and slot.url == "https://example.com/данные?id=3"
        assert slot.location == b"https://example.com/%D0%B4%D0%B0%D0%BD%D0%BD%D1%8B%D0%B5?id=3"
    assert store.asked == 3  # link 7, link 8, and slot 8 of message 3: once each
    assert await resolver.target(codec.encode(8, 4)) is None  # a slot this message lacks
    assert await resolver.target(codec.encode(9, 1)) is None  # no such link
    assert await resolver.target("zzzzzzzzzz") is None  # out of the codes' range


async def test_codes_carry_the_seq_past_their_links_seq_base() -> None:
    resolver = Resolver(FakeLinks())  # type: ignore[arg-type]
    codec = Codec(b"k" * 32, b"link")
    assert await resolver.target(codec.encode(20, 5)) == (20, 2**32 + 5, URL, URL.encode())
    slot = await resolver.target(codec.encode(21, 3))
    assert slot is not None and (slot.seq, slot.url) == (2**32 + 3, "https://example.com/chunk?id=3")
    assert await resolver.target(codec.encode(21, 4)) is None
    # an unsubscribe code is (the anchor link, the offset): the link says the run
    unsubscribe = Codec(b"k" * 32, b"unsubscribe")
    assert await resolver.unsubscribe(unsubscribe.encode(7, 34)) == (1, 34)
    assert await resolver.unsubscribe(unsubscribe.encode(20, 34)) == (2, 2**32 + 34)
    assert await resolver.unsubscribe(unsubscribe.encode(12, 34)) is None  # no such link
    assert await resolver.unsubscribe("zzzzzzzzzz") is None


def test_the_location_is_the_url_as_stored() -> None:
    url = "https://shop.example.com/p/42?utm_source=sms&q=a%20b&x=1;y=2#top"
    assert location(url) == url
    assert location("https://пример.рф/путь?q=да") == (
        "https://%D0%BF%D1%80%D0%B8%D0%BC%D0%B5%D1%80.%D1%80%D1%84/%D0%BF%D1%83%D1%82%D1%8C"
        "?q=%D0%B4%D0%B0")
    assert location("https://e.com/a b\n") == "https://e.com/a%20b%0A"


# -- the routes, in-process on a real store -----------------------------------------------

URL = "https://shop.example.com/sale/42?utm_source=sms&utm_campaign=spring&q=a%20b"
PHONES = ["+447911000001", "+447911000002", "+447911000003"]
PROMO = """
[resources.promo]
virtual_sender = "v"
"""


@dataclass
class Site:
    """The app of a workspace on a fake gateway, and what a test needs to make codes."""

    client: httpx.AsyncClient
    herald: Herald
    gateway: FakeGateway
    app: Litestar
    admin: str

    @property
    def store(self) -> Store:
        return self.herald.store

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    async def import_phones(self, phones: Sequence[str] = PHONES,
                            resource: str = "news") -> None:
        r = await self.client.post("/api/v1/profiles/import", headers=self.auth(), json={
            "database": "main", "matching": "phone", "resource": resource,
            "profiles": [{"phone": p} for p in phones]})
        assert r.status_code == 200, r.text

    async def broadcast(self, resource: str = "news") -> dict[int, str]:
        """Send a broadcast to the resource; its run's seqs -> the phones sent to."""
        before = set(self.gateway.texts)
        r = await self.client.post("/api/v1/mailings", headers=self.auth(), json={
            "name": "spring sale", "kind": "broadcast", "resource": resource,
            "database": "main", "template": "Sale!"})
        assert r.status_code == 201, r.text
        mailing = r.json()["id"]
        r = await self.client.post(f"/api/v1/mailings/{mailing}/start", headers=self.auth())
        assert r.status_code == 200, r.text
        with anyio.fail_after(20):
            while True:
                r = await self.client.get(f"/api/v1/mailings/{mailing}", headers=self.auth())
                if r.json()["status"] == "finished":
                    break
                await anyio.sleep(0.01)
        sent = {k: v for k, v in self.gateway.texts.items() if k not in before}
        return {int(k.rsplit("-", 1)[1]): m.to for k, m in sent.items()}

    async def last_run(self) -> int:
        [(_, run), *_] = await self.store.list_runs(1)
        return run.id

    async def short_link(self, run_id: int, seq: int, url: str = URL, *,
                         seq_base: int = 0) -> str:
        [link] = await self.store.ensure_links(run_id, [url], 0, seq_base=seq_base)
        return "/" + Codec(await self.store.tracking_secret(), b"link").encode(
            link.id, seq - link.seq_base)

    async def unsubscribe_code(self, run_id: int, seq: int, *, seq_base: int = 0) -> str:
        """The code of message ``seq``'s unsubscribe link: its run's first link (of the
        seq_base) and the offset, as the Shortener makes it."""
        [anchor, *_] = await self.store.ensure_links(run_id, [URL], 0, seq_base=seq_base)
        return Codec(await self.store.tracking_secret(), b"unsubscribe").encode(
            anchor.id, seq - anchor.seq_base)

    async def events(self, kind: str) -> list[EventRow]:
        return [e for e in await self.store.events(limit=10_000) if e.kind == kind]

    async def statuses(self, phone: str, resource: str = "news") -> list[str]:
        r = await self.client.get(f"/api/v1/resources/{resource}/subscriptions",
                                  headers=self.auth(), params={"phone": phone})
        assert r.status_code == 200, r.text
        return [s["status"] for s in r.json()["subscriptions"]]


@pytest.fixture
async def site(open_herald: Callable[..., Any], any_store: str) -> AsyncIterator[Site]:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=PROMO) as herald, \
            MailingService.running(herald) as service:
        admin = (await TokenStore(herald.store).create("admin"))[1]
        app = create_app(herald, service)
        transport = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t.example.com") \
                as client:
            yield Site(client, herald, gateway, app, admin)


async def test_a_short_link_redirects_to_its_url_with_the_query_intact(site: Site) -> None:
    await site.import_phones()
    sent = await site.broadcast()
    run_id = await site.last_run()
    seq = min(sent)
    link = await site.short_link(run_id, seq)
    r = await site.client.get(link, headers={"User-Agent": BROWSER})
    assert r.status_code == 302
    assert r.headers["location"] == URL
    assert r.headers["cache-control"] == "no-store"
    [event] = await site.events("click_sms")
    assert (event.run_id, event.seq, event.phone, event.url) == (run_id, seq, sent[seq], URL)
    assert len(await site.events("uclick_sms")) == 1
    await site.client.get(link, headers={"User-Agent": BROWSER})  # a second click: not unique
    assert (len(await site.events("click_sms")), len(await site.events("uclick_sms"))) == (2, 1)
    # with a body (no browser sends one) the framework's route answers, the same way
    r = await site.client.request("GET", link, content=b"x", headers={"User-Agent": BROWSER})
    assert (r.status_code, r.headers["location"], r.headers["cache-control"]) == (
        302, URL, "no-store")
    assert len(await site.events("click_sms")) == 3


@pytest.mark.parametrize("agent", [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "TelegramBot (like TwitterBot)", "WhatsApp/2.23.20.0 A", None])
async def test_a_bot_is_redirected_but_not_counted(site: Site, agent: str | None) -> None:
    await site.import_phones(PHONES[:1])
    sent = await site.broadcast()
    link = await site.short_link(await site.last_run(), min(sent))
    headers = {"User-Agent": agent} if agent else {}
    if agent is None:  # httpx sends its own unless told not to
        headers = {"User-Agent": ""}
    r = await site.client.get(link, headers=headers)
    assert (r.status_code, r.headers["location"]) == (302, URL)
    r = await site.client.head(link, headers={"User-Agent": BROWSER})  # a link checker
    assert (r.status_code, r.headers["location"]) == (302, URL)
    assert await site.events("click_sms") == []
    assert await site.store.report_clicks(ReportFilter()) == []
    # the same link from a browser is counted: the bots were told apart, not lost
    await site.client.get(link, headers={"User-Agent": BROWSER})
    assert len(await site.events("click_sms")) == 1
    assert [(s.url, s.clicks) for s in await site.store.report_clicks(ReportFilter())] == [
        (URL, 1)]


@pytest.mark.parametrize("path", [
    "/abc", "/abcdefghijk", "/abcdefghi!", "/zzzzzzzzzz", "/0000000000", "/u/abc",
    "/u/zzzzzzzzzz", "/ua/0000000000", "/u/0000000000"])
async def test_unknown_or_malformed_codes_get_a_plain_404_page(site: Site, path: str) -> None:
    await site.import_phones(PHONES[:1])
    await site.broadcast()
    r = await site.client.get(path, headers={"User-Agent": BROWSER})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text and "<form" not in r.text
    assert await site.events("click_sms") == []


async def test_a_link_of_a_message_never_sent_redirects_but_counts_nothing(site: Site) -> None:
    await site.import_phones(PHONES[:1])
    sent = await site.broadcast()
    run_id = await site.last_run()
    link = await site.short_link(run_id, max(sent) + 100)
    r = await site.client.get(link, headers={"User-Agent": BROWSER})
    assert (r.status_code, r.headers["location"]) == (302, URL)
    assert await site.events("click_sms") == []
    await site.client.get(await site.short_link(run_id, max(sent)),
                          headers={"User-Agent": BROWSER})
    assert len(await site.events("click_sms")) == 1  # a sent message's link does count


async def test_unsubscribe_get_changes_nothing_post_does_and_the_next_send_skips_it(
    site: Site,
) -> None:
    await site.import_phones()
    sent = await site.broadcast()
    run_id = await site.last_run()
    seq, phone = min(sent.items())
    code = await site.unsubscribe_code(run_id, seq)
    for _ in range(2):  # a link scanner, then the person
        r = await site.client.get(f"/u/{code}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert '<form method="post" action="/u/' + code + '">' in r.text
        assert "news" in r.text and phone[-4:] in r.text and phone not in r.text
    assert await site.statuses(phone) == ["subscribed"]
    assert await site.events("unsub_sms") == []

    r = await site.client.post(f"/u/{code}", data={"confirm": "yes"})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert await site.statuses(phone) == ["unsubscribed"]
    [event] = await site.events("unsub_sms")
    assert (event.run_id, event.seq, event.phone) == (run_id, seq, phone)
    r = await site.client.post(f"/u/{code}")  # again: the same page, nothing more
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert len(await site.events("unsub_sms")) == 1
    r = await site.client.get(f"/u/{code}")  # the page now says so
    assert "You are unsubscribed" in r.text and "<form" not in r.text

    again = await site.broadcast()
    assert sorted(again.values()) == sorted(set(PHONES) - {phone})


async def test_links_of_a_cluster_chunks_seqs_resolve_to_its_recipients(site: Site) -> None:
    # a run whose messages have a cluster chunk's seqs (chunk 1's start at 2**32 + 1),
    # and its links for them: codes carry seq - 2**32
    world = await make_world(site.store, 3, database="chunked")
    _, run = await new_run(site.store, world)
    seqs = [2**32 + k for k in (1, 2, 3)]
    msgs = [message(seq, pid, to) for seq, pid, to in zip(seqs, world.ids, world.phones,
                                                          strict=True)]
    await site.store.reserve(run.id, batches=[(seqs[0], "s", msgs)], skipped=[],
                             checkpoint=0, next_seq=None, counts={}, audience_done=False)
    await site.store.record(run.id, seqs[0], "s", msgs,
                            [Outcome(m.seq, "sent", provider_id=f"p{m.seq}") for m in msgs])
    link = await site.short_link(run.id, seqs[1], seq_base=2**32)
    r = await site.client.get(link, headers={"User-Agent": BROWSER})
    assert (r.status_code, r.headers["location"]) == (302, URL)
    [event] = await site.events("click_sms")
    assert (event.run_id, event.seq, event.phone) == (run.id, seqs[1], world.phones[1])

    code = await site.unsubscribe_code(run.id, seqs[2], seq_base=2**32)
    r = await site.client.get(f"/u/{code}")
    assert r.status_code == 200 and world.phones[2][-4:] in r.text
    r = await site.client.post(f"/u/{code}", data={"confirm": "yes"})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert [await site.statuses(p) for p in world.phones] == [
        ["subscribed"], ["subscribed"], ["unsubscribed"]]
    [event] = await site.events("unsub_sms")
    assert (event.run_id, event.seq, event.phone) == (run.id, seqs[2], world.phones[2])
    # the run's seq_base 0 links are others: their codes name no message of the chunk
    code = await site.unsubscribe_code(run.id, 3)
    assert (await site.client.get(f"/u/{code}")).status_code == 404


async def test_the_global_unsubscribe_leaves_no_resource_of_the_database(site: Site) -> None:
    await site.import_phones()
    await site.import_phones(resource="promo")
    sent = await site.broadcast()
    seq, phone = min(sent.items())
    code = await site.unsubscribe_code(await site.last_run(), seq)
    r = await site.client.get(f"/ua/{code}")
    assert r.status_code == 200 and f'action="/ua/{code}"' in r.text
    assert (await site.statuses(phone), await site.statuses(phone, "promo")) == (
        ["subscribed"], ["subscribed"])
    r = await site.client.post(f"/ua/{code}")
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert (await site.statuses(phone), await site.statuses(phone, "promo")) == (
        ["unsubscribed"], ["unsubscribed"])
    other = PHONES[1]
    assert await site.statuses(other, "promo") == ["subscribed"]
    promo = await site.broadcast("promo")
    assert phone not in promo.values() and other in promo.values()


async def test_an_unsubscribe_post_with_a_big_body_is_refused(site: Site) -> None:
    await site.import_phones(PHONES[:1])
    sent = await site.broadcast()
    code = await site.unsubscribe_code(await site.last_run(), min(sent))
    r = await site.client.post(f"/u/{code}", content=b"x" * 10_000)
    assert r.status_code == 413
    assert await site.statuses(PHONES[0]) == ["subscribed"]


async def test_clicks_wait_in_the_writer_and_are_written_when_the_app_stops(
    site: Site,
) -> None:
    await site.import_phones()
    sent = await site.broadcast()
    run_id = await site.last_run()
    links = [await site.short_link(run_id, seq) for seq in sorted(sent)]
    site.app.state.api.click_interval = 3600  # only the stop writes them
    async with site.app.lifespan():
        for link in links:
            r = await site.client.get(link, headers={"User-Agent": BROWSER})
            assert r.status_code == 302
        r = await site.client.get(links[0], headers={"User-Agent": "Twitterbot/1.0"})
        assert site.app.state.api.clicks.statistics().buffered == 4
        assert await site.events("click_sms") == []
    clicks = await site.events("click_sms")
    assert sorted(e.seq for e in clicks) == sorted(sent)
    assert await site.store.report_clicks(ReportFilter()) == [LinkStat(URL, 3, 3)]


# -- `herald serve`, for real --------------------------------------------------------------

SERVE_CONFIG = """\
[engine]
database = "herald.db"
default_region = "GB"
[gateways.gw]
driver = "http"
url = "{url}"
receipt_secret = "{secret}"
[senders.s1]
gateway = "gw"
caller_id = "ACME"
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1" }}] }}]
[resources.news]
virtual_sender = "v"
"""


@asynccontextmanager
async def herald_serve(
    tmp_path: Path, secret: str = "serve-secret-0123456789", **sim: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewaySimulator, Path, subprocess.Popen[bytes]]]:
    """``herald serve`` in a subprocess over a gateway simulator; SIGTERM on the way out
    (the test may send it first)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    inbound_url = f"{base}/api/v1/inbound/gw?secret={secret}"
    async with GatewaySimulator(inbound_url=inbound_url, **sim) as simulator:
        config = tmp_path / "herald.toml"
        config.write_text(SERVE_CONFIG.format(url=simulator.send_url, secret=secret),
                          encoding="utf-8")
        token = create_token(config, "admin")
        proc = subprocess.Popen(  # noqa: ASYNC220 - Popen only forks
            [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await anyio.to_thread.run_sync(wait_healthy, base, proc)
            async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False,
                                         headers={"Authorization": f"Bearer {token}"}) as c:
                yield c, simulator, config, proc
        finally:
            proc.terminate()
            await anyio.to_thread.run_sync(proc.wait, 30)


async def serve_broadcast(client: httpx.AsyncClient, phones: Sequence[str]) -> None:
    r = await client.post("/api/v1/profiles/import", json={
        "database": "main", "matching": "phone", "resource": "news",
        "profiles": [{"phone": p} for p in phones]})
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/mailings", json={
        "name": "sale", "kind": "broadcast", "resource": "news", "database": "main",
        "template": "Sale!"})
    mailing = r.json()["id"]
    await client.post(f"/api/v1/mailings/{mailing}/start")
    with anyio.fail_after(20):
        while True:
            if (await client.get(f"/api/v1/mailings/{mailing}")).json()["status"] == "finished":
                return
            await anyio.sleep(0.05)


def in_store(config: Path, action: Callable[[Store], Any]) -> Any:
    return anyio.to_thread.run_sync(in_workspace, config, action)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_herald_serve_redirects_and_keeps_every_click_through_sigterm(
    tmp_path: Path, any_store: str
) -> None:
    async with herald_serve(tmp_path) as (client, _, config, proc):
        await serve_broadcast(client, PHONES)

        async def make_links(store: Store) -> list[str]:
            [(_, run), *_] = await store.list_runs(1)
            [link] = await store.ensure_links(run.id, [URL], 0)
            codec = Codec(await store.tracking_secret(), b"link")
            return [f"/{codec.encode(link.id, seq)}" for seq in (1, 2, 3)]

        links = await in_store(config, make_links)
        for link in links:
            r = await client.get(link, headers={"User-Agent": BROWSER})
            assert (r.status_code, r.headers["location"]) == (302, URL)
        r = await client.get(links[0], headers={"User-Agent": "Twitterbot/1.0"})
        assert r.status_code == 302
        r = await client.get("/NotACode00", headers={"User-Agent": BROWSER})
        assert r.status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 30) == 0

    async def clicks(store: Store) -> list[LinkStat]:
        return await store.report_clicks(ReportFilter())

    assert await in_store(config, clicks) == [LinkStat(URL, 3, 3)]
