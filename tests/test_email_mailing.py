"""An email mailing through the engine, to an SMTP sink on loopback written apart from the
project (``tests.fakes.smtp``: aiosmtpd): what each recipient's mail client would get.

The sink takes a 2,000-recipient mailing; every message's DKIM signature verifies with
dkimpy, each has a text part and an HTML part, its links are short links on the tracking
domain (its images are not), its open pixel is there, its subject (Emoji, Cyrillic) decodes
to what was rendered, and its return path is the VERP address of its message.
"""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

import anyio
import dkim
import pytest

from engine.errors import ConfigError, InputError
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.store.base import ImportRecord
from engine.tracking.bounces import verp_id
from tests.fakes.smtp import Sink, dkim_key

pytestmark = pytest.mark.anyio

CONFIG = """
[engine]
database = "herald.db"
batch_size = 100

[tracking]
domain = "t.example.com"
scheme = "http"

[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
connections = 4
dkim_selector = "s1"
dkim_domain = "example.com"
dkim_key = "dkim.pem"

[senders.news]
gateway = "mail"
from = "Herald News <news@example.com>"
reply_to = "help@example.com"
return_path = "bounces@bounces.example.com"

[virtual_senders.letters]
rules = [{{ senders = [{{ sender = "news" }}] }}]

[resources.letters]
virtual_sender = "letters"
channel = "email"
"""

HTML = """<html><head><style>p.lead {{ color: #c00; }}</style></head><body>
<p class="lead">Hello {{lead._fname}}!</p>
<p><a href="https://shop.example.com/sale?utm_source=email&amp;x=1">Our sale</a></p>
<img src="https://cdn.example.com/banner.png" alt="banner">
<p><a href="{{unsubscribe}}">Unsubscribe</a></p>
</body></html>""".replace("{{", "{").replace("}}", "}")

SUBJECT = "Привет, {lead._fname} 🎉 — our sale starts today"


async def open_herald(tmp_path: Path, port: int) -> Herald:
    path = tmp_path / "herald.toml"
    path.write_text(CONFIG.format(port=port), encoding="utf-8")
    return await Herald.open(path, plugins=load_plugins())


async def audience(herald: Herald, emails: list[str]) -> Any:
    """A profile per address (none matches another: duplicates are the run's to find)."""
    db = await herald.store.database_id("main", create=True)
    return await herald.store.import_profiles(
        db, [ImportRecord(None, None, e, {"_fname": f"Ann{i}"}) for i, e in enumerate(emails)],
        matching="email", resource_id=await herald.store.resource_id("letters"),
        channel="email",
    )


def _verify(raw: bytes, txt: bytes) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt if name == b"s1._domainkey.example.com." else b""

    return bool(dkim.verify(raw, dnsfunc=dns))


@pytest.mark.slow
async def test_a_2000_recipient_email_mailing_reaches_the_sink_signed_and_tracked(
    tmp_path: Path,
) -> None:
    _, txt = dkim_key(tmp_path)
    emails = [f"reader{i}@Example.ORG" for i in range(2000)]
    dupes = ["reader7@example.org", "reader8@EXAMPLE.org"]  # the same addresses, normalised
    with Sink() as sink:
        async with await open_herald(tmp_path, sink.port) as herald:
            imported = await audience(herald, [*emails, *dupes, "not an address"])
            log = await herald.send(resource="letters", database="main", template=HTML,
                                    subject=SUBJECT)
        received = list(sink.received)
    assert len(imported.rejected) == 1  # the import refuses the address it cannot read
    assert (log.sent, log.duplicate_phones, log.failed) == (2000, 2, 0)
    assert len(received) == 2000
    recipients = sorted(r.rcpt_tos[0] for r in received)
    assert recipients == sorted(e.replace("Example.ORG", "example.org") for e in emails)
    ids = set()
    for r in received:
        assert _verify(r.content, txt), r.rcpt_tos
        msg = email.message_from_bytes(r.content, policy=email.policy.default)
        n = int(r.rcpt_tos[0].removeprefix("reader").partition("@")[0])
        assert msg["Subject"] == f"Привет, Ann{n} 🎉 — our sale starts today"
        assert msg["From"] == "Herald News <news@example.com>"
        assert msg["Reply-To"] == "help@example.com"
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert f"Hello Ann{n}!" in text and f"Hello Ann{n}!" in html
        # CSS inlined; the link is a short link on the tracking domain, the image is not
        assert re.search(r'<p class="lead" style="color: ?#c00;?"', html), html
        links = re.findall(r'href="([^"]+)"', html)
        assert len(links) == 2 and all(u.startswith("http://t.example.com/") for u in links)
        assert "shop.example.com" not in html and "shop.example.com" not in text
        assert links[0] in text  # the text version has the same short link
        assert 'src="https://cdn.example.com/banner.png"' in html
        pixel = re.findall(r'<img src="(http://t\.example\.com/o/[^"]+)"', html)
        assert len(pixel) == 1
        unsubscribe = msg["List-Unsubscribe"]
        assert unsubscribe == f"<{links[1]}>" and "/u/" in links[1]
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        herald_id = msg["X-Herald-Id"]
        assert msg["Message-ID"] == f"<{herald_id}@example.com>"
        assert verp_id(r.mail_from) == herald_id
        assert r.mail_from == f"bounces+{herald_id}@bounces.example.com"
        ids.add(herald_id)
    assert len(ids) == 2000


async def test_an_email_mailing_needs_a_subject(
    tmp_path: Path,
) -> None:
    dkim_key(tmp_path)
    with Sink() as sink:
        async with await open_herald(tmp_path, sink.port) as herald:
            await audience(herald, ["a@example.org"])
            with pytest.raises(InputError, match=r"^subject: .*need a subject"):
                await herald.send(resource="letters", database="main", template=HTML)
        assert sink.received == []


def test_check_config_tells_which_keys_a_resource_channel_needs(tmp_path: Path) -> None:
    from engine.config import load_config

    bad = CONFIG.format(port=25).replace('from = "Herald News <news@example.com>"',
                                         'caller_id = "HERALD"')
    path = tmp_path / "herald.toml"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, drivers=load_plugins().drivers)
    paths = {p.path: p.message for p in err.value.problems}
    assert "senders.news.caller_id" in paths and "senders.news.from" in paths
    assert "sends email" in paths["senders.news.caller_id"]

    sms_resource = CONFIG.format(port=25).replace('channel = "email"', 'channel = "sms"')
    path.write_text(sms_resource, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, drivers=load_plugins().drivers)
    problem: Any = next(p for p in err.value.problems if p.path == "resources.letters.channel")
    assert "'smtp' driver sends email" in problem.message


FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
SECRET = "inbound-secret-0123456789"


def _report(name: str, herald_id: str, address: str, placeholder: str,
            placeholder_id: str) -> bytes:
    """A fixture mail about our message ``herald_id`` to ``address``."""
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(placeholder_id.encode(), herald_id.encode()).replace(
        placeholder.encode(), address.encode())


async def test_a_dsn_and_a_complaint_keep_their_addresses_out_of_the_next_mailing(
    tmp_path: Path, any_store: str,
) -> None:
    """Bounces posted to the inbound route by the bounce mailbox: a DSN makes its address
    ``hardbounced``, an ARF complaint makes its address a ``complainer`` and suppresses it;
    the next mailing sends to neither. A one-click POST on a message's List-Unsubscribe
    URL unsubscribes its recipient; a GET of it does not."""
    import httpx

    from engine.api.app import create_app
    from engine.service import MailingService

    dkim_key(tmp_path)
    addresses = [f"reader{i}@example.org" for i in range(5)]
    with Sink() as sink:
        path = tmp_path / "herald.toml"
        path.write_text(CONFIG.format(port=sink.port).replace(
            '[gateways.mail]\n', f'[gateways.mail]\nreceipt_secret = "{SECRET}"\n'),
            encoding="utf-8")
        async with await Herald.open(path, plugins=load_plugins()) as herald, \
                MailingService.running(herald) as service:
            await audience(herald, addresses)
            first = await herald.send(resource="letters", database="main", template=HTML,
                                      subject="One")
            by_rcpt = {r.rcpt_tos[0]: r for r in sink.received}
            ids = {a: email.message_from_bytes(by_rcpt[a].content)["X-Herald-Id"]
                   for a in addresses}
            app = create_app(herald, service)
            transport = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://t.example.com") as client:
                dsn = _report("postfix_user_unknown.eml", ids[addresses[1]], addresses[1],
                              "nobody@example.net", "a1b2c3d4e5-7")
                r = await client.post("/api/v1/inbound/mail", content=dsn, headers={
                    "Content-Type": "message/rfc822", "X-Herald-Secret": SECRET,
                    "X-Original-To": by_rcpt[addresses[1]].mail_from})
                assert r.status_code == 200, r.text
                assert r.json()["hardbounced"] == 1
                arf = _report("arf_yahoo.eml", ids[addresses[2]], addresses[2],
                              "reader@yahoo.com", "a1b2c3d4e5-99")
                r = await client.post("/api/v1/inbound/mail", content=arf, headers={
                    "Content-Type": "message/rfc822", "X-Herald-Secret": SECRET})
                assert r.status_code == 200, r.text
                assert r.json()["complainers"] == 1
                # one-click unsubscribe: a GET (a scanner) changes nothing, the POST does
                msg = email.message_from_bytes(by_rcpt[addresses[3]].content)
                url = msg["List-Unsubscribe"].strip("<>").removeprefix("http://t.example.com")
                assert (await client.get(url)).status_code == 200
                assert await _status(herald, addresses[3]) == "subscribed"
                r = await client.post(url, content=b"List-Unsubscribe=One-Click", headers={
                    "Content-Type": "application/x-www-form-urlencoded"})
                assert r.status_code == 200
            assert await _status(herald, addresses[1]) == "hardbounced"
            assert await _status(herald, addresses[2]) == "complainer"
            assert await _status(herald, addresses[3]) == "unsubscribed"
            kinds = {e.kind for e in await herald.store.events(after=0, limit=1000)}
            assert {"send", "hbounce", "complain", "unsub"} <= kinds
            # the complainer's address is suppressed even where it is subscribed again
            await herald.store.subscribe(await herald.store.resource_id("letters"),
                                         (await _profile(herald, addresses[2])),
                                         addresses[2])
            sink.received.clear()
            second = await herald.send(resource="letters", database="main", template=HTML,
                                       subject="Two")
            got = sorted(r.rcpt_tos[0] for r in sink.received)
    assert first.sent == 5
    assert got == [addresses[0], addresses[4]]
    assert (second.sent, second.suppressed) == (2, 1)


async def _status(herald: Herald, address: str) -> str:
    rows = await herald.store.find_subscriptions(
        await herald.store.resource_id("letters"), phone=address)
    assert len(rows) == 1
    return rows[0].status


async def _profile(herald: Herald, address: str) -> int:
    db = await herald.store.database_id("main")
    return (await herald.store.find_profiles(db, "email", [address]))[address]


async def test_a_trigger_mailing_of_an_email_resource_sends_each_call_at_once(
    tmp_path: Path, any_store: str,
) -> None:
    """A transactional email: each call's message id comes back at once, and the message,
    its subject rendered with the call's content, reaches the sink."""
    from engine.service import MailingService, MailingSpec, TriggerRequest

    dkim_key(tmp_path)
    with Sink() as sink:
        async with await open_herald(tmp_path, sink.port) as herald, \
                MailingService.running(herald) as service:
            await audience(herald, ["ann@example.org", "bob@example.org"])
            m = await service.create(MailingSpec(
                name="receipt", kind="trigger", resource="letters", database="main",
                template="<p>Order {apicontent.order} is on its way</p>",
                subject="Your order {apicontent.order}"))
            answers = await service.trigger(m.id, [
                TriggerRequest(email="ann@example.org", content={"order": "A-1"}),
                TriggerRequest(email="nobody@example.org", content={"order": "A-2"})])
            for _ in range(1000):  # the sink runs in a thread of its own: polled
                if sink.received:
                    break
                await anyio.sleep(0.02)
    assert answers[0].message_id and answers[1].error
    (got,) = sink.received
    msg = email.message_from_bytes(got.content, policy=email.policy.default)
    assert (got.rcpt_tos, msg["Subject"]) == (["ann@example.org"], "Your order A-1")
    assert msg["X-Herald-Id"] == answers[0].message_id
    assert "Order A-1 is on its way" in msg.get_body(("plain",)).get_content()
