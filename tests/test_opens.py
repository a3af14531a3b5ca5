"""Email opens: the pixel's URL and code, what a fetch of it is (a person, a bot, Apple Mail
Privacy Protection's prefetch), the open writer, and ``GET /o/{code}`` on a real store.

The email site here (``email_site``, ``EmailSite``) is shared by the other email tracking
tests (one-click unsubscribe, bounces, the channel report)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar
from trio.testing import MockClock

from engine.api import TokenStore, create_app
from engine.core.codes import MAX_VALUE, Codec
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.runner import Herald
from engine.service import MailingService
from engine.store.base import EventRow, ImportRecord, LinkRow, Open, OpenReport, Store
from engine.store.models import AudienceSource
from engine.testing import FakeGateway
from engine.tracking.bots import BotDetector
from engine.tracking.opens import (
    PIXEL,
    OpenCodes,
    OpenPixel,
    OpenWriter,
    is_prefetch,
    open_pixel_url,
)

pytestmark = pytest.mark.anyio

FAKE_CLOCK = pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])

SECRET = b"s" * 32
BASE = "https://t.example.com"
#: Apple Mail Privacy Protection's prefetch: Apple's network, the bare agent.
MPP_IP = "17.58.101.7"
MPP_AGENT = "Mozilla/5.0"
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
               " (KHTML, like Gecko) Mobile/15E148")
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"
               " (via ggpht.com GoogleImageProxy)")
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.3.1"


# -- what a fetch is ----------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "agent", "prefetch"), [
    (MPP_IP, MPP_AGENT, True),
    ("17.0.0.1", " Mozilla/5.0 ", True),
    ("17.255.255.254", None, True),
    ("::ffff:17.58.101.7", MPP_AGENT, True),  # an IPv4-mapped peer of a dual-stack server
    # a person on Apple's network with a real mail client or browser opens it
    (MPP_IP, IPHONE_MAIL, False),
    # the bare agent from elsewhere is no Apple proxy
    ("18.0.0.1", MPP_AGENT, False),
    ("16.255.255.255", MPP_AGENT, False),
    ("203.0.113.7", MPP_AGENT, False),
    # Gmail's image proxy fetches on a real open
    ("66.249.84.1", GMAIL_PROXY, False),
    (None, MPP_AGENT, False),
    ("not an address", MPP_AGENT, False),
    ("2620:149::1", IPHONE_MAIL, False),
])
def test_apple_mail_privacy_prefetches_are_told_apart(
    ip: str | None, agent: str | None, prefetch: bool,
) -> None:
    assert is_prefetch(ip, agent) is prefetch


@pytest.mark.parametrize(("agent", "bot"), [
    (GMAIL_PROXY, False),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", False),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)", False),
    ("Outlook-iOS/723.4027091.prod.iphone (4.46.0)", False),
    (THUNDERBIRD, False),
    (IPHONE_MAIL, False),
    ("Googlebot/2.1 (+http://www.google.com/bot.html)", True),
    ("curl/8.5.0", True),
    ("", True),
    (None, True),
])
def test_mail_clients_and_their_proxies_are_people_crawlers_are_bots(
    agent: str | None, bot: bool,
) -> None:
    assert BotDetector().is_open_bot(agent) is bot


# -- the pixel's URL and code -------------------------------------------------------------


class FakeLinks:
    """A store's secret and link rows."""

    def __init__(self) -> None:
        self.asked = 0
        self.links = {7: LinkRow(7, 1, "https://e.com/a"), 20: LinkRow(20, 2, None, 2**32)}

    async def tracking_secret(self) -> bytes:
        return SECRET

    async def link(self, link_id: int) -> LinkRow | None:
        self.asked += 1
        return self.links.get(link_id)


async def test_a_pixel_url_reads_back_to_its_run_and_seq() -> None:
    codes = OpenCodes(FakeLinks())  # type: ignore[arg-type]
    pixels = OpenPixel(BASE, SECRET, 7)
    for seq in (0, 1, 42, MAX_VALUE - 1):
        url = pixels.url(seq)
        assert url is not None and url.startswith(f"{BASE}/o/")
        assert url == open_pixel_url(BASE, SECRET, 7, seq, 0)
        code = url.rsplit("/", 1)[1]
        assert code == Codec(SECRET, b"open").encode(7, seq)
        assert await codes.decode(code) == (1, seq)
    # a cluster chunk's seqs: the code carries seq - seq_base
    chunk = OpenPixel(BASE, SECRET, 20, 2**32)
    url = chunk.url(2**32 + 5)
    assert url is not None and await codes.decode(url.rsplit("/", 1)[1]) == (2, 2**32 + 5)


async def test_other_codes_read_back_to_nothing() -> None:
    store = FakeLinks()
    codes = OpenCodes(store)  # type: ignore[arg-type]
    # an unsubscribe or a link code of the same pair is no pixel's
    unsubscribe = Codec(SECRET, b"unsubscribe").encode(7, 3)
    assert await codes.decode(unsubscribe) != (1, 3)
    assert await codes.decode(Codec(SECRET, b"open").encode(9, 3)) is None  # no link 9
    assert await codes.decode("zzzzzzzzzz") is None
    # a pixel of another secret names nothing of ours
    other = Codec(b"o" * 32, b"open").encode(7, 3)
    assert await codes.decode(other) != (1, 3)


async def test_the_anchor_link_is_asked_for_once() -> None:
    store = FakeLinks()
    codes = OpenCodes(store)  # type: ignore[arg-type]
    pixels = OpenPixel(BASE, SECRET, 7)
    for seq in range(50):
        url = pixels.url(seq)
        assert url is not None
        await codes.decode(url.rsplit("/", 1)[1])
    assert store.asked == 1


def test_a_seq_out_of_the_codes_range_has_no_pixel() -> None:
    pixels = OpenPixel(BASE, SECRET, 7, 2**32)
    assert pixels.url(5) is None  # below its seq_base
    assert pixels.url(2**32 + MAX_VALUE) is None
    with pytest.raises(ValueError, match="seq"):
        open_pixel_url(BASE, SECRET, 7, MAX_VALUE)
    with pytest.raises(ValueError, match="anchor"):
        OpenPixel(BASE, SECRET, MAX_VALUE)


# -- the open writer -----------------------------------------------------------------------


def seen(n: int, *, bot: bool = False) -> Open:
    return Open(1, n, 1_760_000_000.0 + n, "203.0.113.7", IPHONE_MAIL, bot)


class FakeOpens:
    def __init__(self, *, failures: int = 0) -> None:
        self.batches: list[list[Open]] = []
        self.failures = failures

    async def add_opens(self, opens: Sequence[Open]) -> OpenReport:
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        self.batches.append(list(opens))
        return OpenReport(len(opens), sum(1 for o in opens if not o.bot), 0)

    @property
    def written(self) -> list[Open]:
        return [o for batch in self.batches for o in batch]


async def until(check: Callable[[], object]) -> None:
    with anyio.fail_after(60):
        while not check():  # noqa: ASYNC110 - polls what a fake store wrote
            await anyio.sleep(0.01)


@FAKE_CLOCK
async def test_opens_are_written_in_batches_and_what_is_left_on_the_way_out() -> None:
    store = FakeOpens()
    writer = OpenWriter(store, interval=3600, batch=10,  # type: ignore[arg-type]
                        transaction=10)
    async with writer.running():
        for n in range(10):
            writer.record(seen(n))
        await until(lambda: store.batches)
        for n in range(10, 13):
            writer.record(seen(n))
        await anyio.sleep(60)
        assert writer.statistics().buffered == 3
    assert [len(b) for b in store.batches] == [10, 3]
    assert store.written == [seen(n) for n in range(13)]


@FAKE_CLOCK
async def test_a_failed_write_keeps_its_opens_and_a_full_buffer_drops_new_ones() -> None:
    store = FakeOpens(failures=1)
    writer = OpenWriter(store, interval=0.5, batch=2, transaction=2,  # type: ignore[arg-type]
                        capacity=3)
    for n in range(5):
        writer.record(seen(n))
    async with writer.running():
        await until(lambda: len(store.written) == 3)
    stats = writer.statistics()
    assert (stats.written, stats.dropped, stats.failed_writes) == (3, 2, 1)


# -- the email site: an email resource beside the SMS one, on a real store ----------------

EMAILS = ["ivan@example.com", "Maria@example.org", "olga@xn--e1afmkfd.xn--p1ai"]

EMAIL_CONFIG = """
[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = 2525
security = "none"

[senders.m1]
gateway = "mail"
from = "News <news@example.com>"

[virtual_senders.vm]
rules = [{ senders = [{ sender = "m1", percent = 100 }] }]

[resources.letters]
channel = "email"
virtual_sender = "vm"

[resources.letters2]
channel = "email"
virtual_sender = "vm"

[gateways.mg]
driver = "mailgun"
domain = "mg.example.com"
api_key = "fake-mailgun-api-key-0123456789abcdef"
webhook_signing_key = "fake-mailgun-webhook-signing-key"

[senders.g1]
gateway = "mg"
from = "Digest <digest@mg.example.com>"

[virtual_senders.vg]
rules = [{ senders = [{ sender = "g1", percent = 100 }] }]

[resources.digest]
channel = "email"
virtual_sender = "vg"
"""


@dataclass
class EmailSite:
    """The app of a workspace with email resources ``letters`` and ``letters2`` (on an
    ``smtp`` gateway ``mail``), ``digest`` (on a ``mailgun`` gateway ``mg``) and the SMS
    resource ``news``; runs are made through the store, as the
    pipeline records them."""

    client: httpx.AsyncClient
    herald: Herald
    app: Litestar
    admin: str
    #: The uid of each run ``send`` made.
    uids: dict[int, str] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.herald.store

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    async def subscribe(self, emails: Sequence[str] = EMAILS, *, resource: str = "letters",
                        database: str = "main") -> dict[str, int]:
        """Profiles with these addresses, subscribed to the email resource: address ->
        profile id."""
        database_id = await self.store.database_id(database, create=True)
        resource_id = await self.store.resource_id(resource)
        records = [ImportRecord(e, None, e, {}) for e in emails]
        await self.store.import_profiles(database_id, records, matching="email",
                                         resource_id=resource_id, channel="email")
        found = await self.store.find_profiles(database_id, "email", list(emails))
        return {e: found[e] for e in emails}

    async def send(self, profiles: dict[str, int], *, resource: str = "letters",
                   database: str = "main", name: str = "news",
                   sender: str = "m1") -> tuple[int, dict[int, str]]:
        """An email run to ``profiles``, every message sent: (run id, seq -> address)."""
        database_id = await self.store.database_id(database)
        _, run = await self.store.create_run(
            name=name, resource=resource, template="<p>Hello</p>", limit=None,
            source=AudienceSource("list", database_id, channel="email"))
        msgs = [Message(seq, f"{run.uid}-{seq}", pid, email, sender, "<p>Hello</p>", 1)
                for seq, (email, pid) in enumerate(profiles.items(), 1)]
        await self.store.reserve(run.id, batches=[(1, sender, msgs)], skipped=[],
                                 checkpoint=0, next_seq=None, counts={}, audience_done=True)
        await self.store.record(run.id, 1, sender, msgs, [
            Outcome(m.seq, "sent", provider_id=f"<{m.id}@example.com>") for m in msgs])
        self.uids[run.id] = run.uid
        return run.id, {m.seq: m.phone for m in msgs}

    def message_id(self, run_id: int, seq: int) -> str:
        """Herald's id of message ``seq`` of a run ``send`` made."""
        return f"{self.uids[run_id]}-{seq}"

    async def anchor(self, run_id: int, seq_base: int = 0) -> LinkRow:
        [anchor, *_] = await self.store.ensure_links(run_id, ["https://shop.example.com/"],
                                                     0, seq_base=seq_base)
        return anchor

    async def pixel(self, run_id: int, seq: int) -> str:
        """The path of message ``seq``'s open pixel, as the engine makes it."""
        anchor = await self.anchor(run_id)
        url = open_pixel_url(BASE, await self.store.tracking_secret(), anchor.id, seq,
                             anchor.seq_base)
        return url.removeprefix(BASE)

    async def unsubscribe_code(self, run_id: int, seq: int) -> str:
        anchor = await self.anchor(run_id)
        return Codec(await self.store.tracking_secret(), b"unsubscribe").encode(
            anchor.id, seq - anchor.seq_base)

    async def events(self, kind: str, run_id: int | None = None) -> list[EventRow]:
        return [e for e in await self.store.events(limit=10_000, run_id=run_id)
                if e.kind == kind]

    async def statuses(self, email: str, resource: str = "letters") -> list[str]:
        resource_id = await self.store.resource_id(resource)
        return [s.status for s in await self.store.find_subscriptions(resource_id,
                                                                       phone=email)]


@asynccontextmanager
async def open_email_site(open_herald: Callable[..., Any]) -> AsyncIterator[EmailSite]:
    """The email site of a test (``open_herald``: the conftest's fixture); every test file
    of it has a ``site`` fixture of its own around this."""
    async with await open_herald(FakeGateway(), default_region="GB",
                                 extra=EMAIL_CONFIG) as herald, \
            MailingService.running(herald) as service:
        admin = (await TokenStore(herald.store).create("admin"))[1]
        app = create_app(herald, service)
        transport = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t.example.com") \
                as client:
            yield EmailSite(client, herald, app, admin)


@pytest.fixture
async def site(open_herald: Callable[..., Any], any_store: str) -> AsyncIterator[EmailSite]:
    async with open_email_site(open_herald) as site:
        yield site


async def fetch(site: EmailSite, path: str, agent: str | None = IPHONE_MAIL,
                ip: str = "203.0.113.7", method: str = "GET") -> httpx.Response:
    """Fetch ``path`` from the peer ``ip``."""
    transport = httpx.ASGITransport(site.app, client=(ip, 50000))
    headers = {"User-Agent": agent if agent is not None else ""}
    async with httpx.AsyncClient(transport=transport, base_url="http://t.example.com") as c:
        return await c.request(method, path, headers=headers)


def assert_pixel(r: httpx.Response, *, body: bool = True) -> None:
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/gif"
    assert "no-store" in r.headers["cache-control"]
    if body:
        assert r.content == PIXEL


# -- GET /o/{code} --------------------------------------------------------------------------


async def test_an_open_is_the_gif_and_an_open_event_and_the_first_a_unique_one(
    site: EmailSite,
) -> None:
    run_id, sent = await site.send(await site.subscribe())
    seq, email = min(sent.items())
    pixel = await site.pixel(run_id, seq)
    assert_pixel(await fetch(site, pixel))
    [event] = await site.events("open")
    assert (event.run_id, event.seq, event.phone) == (run_id, seq, email)
    assert len(await site.events("uopen")) == 1
    assert_pixel(await fetch(site, pixel, GMAIL_PROXY))  # opened again, through Gmail
    assert (len(await site.events("open")), len(await site.events("uopen"))) == (2, 1)
    other = await site.pixel(run_id, max(sent))
    assert_pixel(await fetch(site, other, THUNDERBIRD))
    assert (len(await site.events("open")), len(await site.events("uopen"))) == (3, 2)
    assert await site.events("open_sms") == [] and await site.events("click") == []


async def test_a_prefetch_or_a_bot_gets_the_gif_and_counts_for_nothing(
    site: EmailSite,
) -> None:
    run_id, sent = await site.send(await site.subscribe())
    pixel = await site.pixel(run_id, min(sent))
    assert_pixel(await fetch(site, pixel, MPP_AGENT, ip=MPP_IP))  # Apple MPP's prefetch
    assert_pixel(await fetch(site, pixel, "Googlebot/2.1 (+http://www.google.com/bot.html)"))
    assert_pixel(await fetch(site, pixel, None))
    assert_pixel(await fetch(site, pixel, method="HEAD"), body=False)
    assert await site.events("open") == [] and await site.events("uopen") == []
    # then the person opens it: the first open that counts is the unique one
    assert_pixel(await fetch(site, pixel, IPHONE_MAIL, ip=MPP_IP))
    assert (len(await site.events("open")), len(await site.events("uopen"))) == (1, 1)


@pytest.mark.parametrize("path", [
    "/o/abc", "/o/zzzzzzzzzz", "/o/0000000000", "/o/abcdefghi!", "/o/abcdefghijk"])
async def test_any_other_code_gets_the_gif_and_records_nothing(
    site: EmailSite, path: str,
) -> None:
    await site.send(await site.subscribe())
    assert_pixel(await fetch(site, path))
    assert await site.events("open") == []


async def test_a_pixel_of_a_message_never_sent_records_nothing(site: EmailSite) -> None:
    run_id, sent = await site.send(await site.subscribe())
    assert_pixel(await fetch(site, await site.pixel(run_id, max(sent) + 100)))
    assert await site.events("open") == []
    # a link or an unsubscribe code is no pixel
    code = await site.unsubscribe_code(run_id, min(sent))
    assert_pixel(await fetch(site, f"/o/{code}"))
    assert await site.events("open") == []


async def test_opens_wait_in_the_writer_when_the_app_runs_its_lifespan(
    site: EmailSite,
) -> None:
    run_id, sent = await site.send(await site.subscribe())
    pixels = [await site.pixel(run_id, seq) for seq in sorted(sent)]
    api = site.app.state.api
    api.click_interval = 3600
    async with site.app.lifespan():
        for pixel in pixels:
            assert_pixel(await fetch(site, pixel))
        assert api.opens.statistics().buffered == len(pixels)
        assert await site.events("open") == []
    assert sorted(e.seq or 0 for e in await site.events("open")) == sorted(sent)
