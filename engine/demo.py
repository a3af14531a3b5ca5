"""``herald demo``: a throw-away workspace, a generated audience, one mailing end to end.

It sends through two gateway simulators on loopback (one a little faulty: latency, 1% of
requests answered 500, a few numbers rejected), via two senders of one virtual sender.

The audience is built to exercise every rule a real one breaks: the same phone written in
different formats on different profiles, unsubscribed profiles, profiles with no
subscription at all, suppressed phones and malformed numbers. ``generate`` returns the plan
(how many of each were planted) so a test can check the mailing log against it. It writes
through the store's protocols only, so it fills any store.

``herald demo --channel email`` sends an email mailing instead, through the ``smtp``
driver (DKIM-signed with a key made for the demo) to an SMTP sink on loopback
(``MailSink``: aiosmtpd in a thread): profiles with email addresses (the same address with
its domain in another case, unsubscribed, suppressed by address or by domain, malformed
ones the import refuses), an HTML template with a link, a subject with Emoji. The sink
counts what it takes and keeps a sample, whose signatures ``check_sample`` verifies with
dkimpy; ``exercise_email_tracking`` opens, clicks and one-click unsubscribes with it.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from array import array
from pathlib import Path
from typing import Any, Literal

import msgspec

from engine.core.emails import normalise_email
from engine.errors import StoreError
from engine.store.base import ImportRecord, Store
from engine.store.models import AudienceSource

__all__ = ["DEMO_CONFIG", "DEMO_EMAIL_CONFIG", "DEMO_HTML", "DEMO_SUBJECT", "DEMO_TEMPLATE",
           "AudiencePlan", "EmailTrackingDemo", "MailSink", "SinkCheck", "channel_key",
           "check_sample", "dkim_key", "exercise_email_tracking", "generate",
           "write_email_workspace", "write_workspace"]

Channel = Literal["sms", "email"]

DEMO_CONFIG = """\
# A Herald workspace made by `herald demo`. See config/herald.toml for every key.
# The two gateways are simulators that `herald demo` ran on loopback while it sent;
# start your own with `herald simulate --port 8025` and point `url` at it to send again.
[engine]
database = {database}
default_region = "RU"          # numbers written without a country code are Russian

[gateways.main]
driver = "http"                # herald-json over HTTP/1.1 (docs/wire-format.md)
url = "{main_url}"
batch_size = 100
# the simulators post receipts and replies to POST /api/v1/dlr|inbound/NAME?secret=...
receipt_secret = "{secret}"

[gateways.backup]
driver = "http"
url = "{backup_url}"
batch_size = 100
receipt_secret = "{secret}"

[senders.main]
gateway = "main"
caller_id = "HERALD"
rate = 0                       # segments per second; 0 = as fast as the gateway answers
[senders.main.retry.transient]
base = 0.05
[senders.main.retry.message]
base = 0.05

[senders.backup]
gateway = "backup"
caller_id = "HERALD"
[senders.backup.retry.transient]
base = 0.05

[virtual_senders.default]
rules = [
    {{ senders = [{{ sender = "main", percent = 70 }}, {{ sender = "backup", percent = 30 }}] }},
]

[resources.news]
channel = "sms"
databases = ["customers"]
virtual_sender = "default"
unsubscribe_url = "https://herald.example/u"

# The demo served the tracking domain on loopback: each text's link went out as a short
# per-recipient link there, and {{unsubscribe}} as a per-recipient page.
[tracking]
domain = "{tracking}"
scheme = "http"
"""

DEMO_TEMPLATE = (
    "Hi {lead._fname}! "
    '{if lead._city equal "Moscow"}Our Moscow flagship opens late on Saturday.'
    "{else}New arrivals in {lead._city} this week.{end}"
    "{if lead.interests} Picked for you: "
    "{for item in lead.interests}{item}{if not loop.last}, {end}{end}.{end}"
    " https://shop.example/new?utm_source=sms Stop: {unsubscribe}"
)

_FIRST = ["Anna", "Boris", "Chloé", "Dmitri", "Elena", "Farid", "Galina", "Hugo", "Irina",
          "José", "Katya", "Lev", "Maria", "Nikolai", "Olga", "Pavel", "Zoë"]
_CITIES = ["Moscow", "Saint Petersburg", "Kazan", "Novosibirsk", "Yekaterinburg", "Sochi"]
_INTERESTS = ["sneakers", "jackets", "bags", "watches", "scarves", "sunglasses"]
_MALFORMED = ["12345", "+7 912", "phone", "n/a", "0000", "+999 123 4567",
              "7916123456789012", "+7 916 123 45"]


#: An email audience's domains: an IDN one shows the normalisation (IDNA A-labels).
_DOMAINS = ["example.com", "example.net", "mail.example.org", "пример.рф"]
#: The domain whose every address the email demo suppresses (a domain suppression).
_GONE_DOMAIN = "old-shop.example.com"
_MALFORMED_EMAILS = ["anna@", "n/a", "boris@@example.com", "olga at example.com",
                     "@example.com", "lev@localhost", "zoe@example", "maria@exa mple.com"]
_ASCII = [unicodedata.normalize("NFKD", n).encode("ascii", "ignore").decode().lower()
          for n in _FIRST]


def _local(number: int) -> str:
    """The local part of the address of generated number ``number``."""
    return f"{_ASCII[number % len(_ASCII)]}.{number % 10_000_000:07d}"


def _email(national: str, rng: random.Random) -> str:
    """The address of generated number ``national``, normalised (as an import stores it)."""
    number = int(national)
    return normalise_email(f"{_local(number)}@{_DOMAINS[number % len(_DOMAINS)]}")


def _email_formats(national: str, rng: random.Random) -> str:
    """The address of ``national`` as people write it: its domain in any case."""
    number = int(national)
    domain = _DOMAINS[number % len(_DOMAINS)]
    return f"{_local(number)}@{rng.choice([domain, domain.upper(), domain.title()])}"


class AudiencePlan(msgspec.Struct, frozen=True):
    """What ``generate`` planted. Categories are disjoint."""

    profiles: int
    unique: int
    duplicates: int
    unsubscribed: int
    no_subscription: int
    suppressed: int
    invalid: int
    #: Records the import refused (an email audience's malformed addresses): no profile.
    rejected: int = 0

    @property
    def stored(self) -> int:
        """Profiles in the database."""
        return self.profiles - self.rejected

    @property
    def subscribed(self) -> int:
        return self.stored - self.unsubscribed - self.no_subscription

    @property
    def recipients(self) -> int:
        return self.unique


def _formats(national: str, rng: random.Random) -> str:
    """One Russian mobile number (10 national digits) written as people write it."""
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    return rng.choice([
        f"+7{national}",
        f"+7 {a} {b}-{c}-{d}",
        f"8 ({a}) {b}-{c}-{d}",
        f"8{national}",
        f"7 {a} {b} {c} {d}",
        f"+7({a}){b}{c}{d}",
    ])


async def _last_profile_id(store: Store, source: AudienceSource, resource_id: int) -> int:
    """The database's highest profile id (0 if it has none)."""
    last = 0
    if await store.count_audience(source):
        while rows := await store.audience_chunk(source, resource_id, last, 10_000):
            last = rows[-1][0]  # AudienceRow.profile_id (the hot path hands bare tuples)
    return last


async def generate(store: Store, *, profiles: int, resource: str = "news",
                   database: str = "customers", seed: int = 1, chunk: int = 50_000,
                   messy: bool = True, channel: Channel = "sms") -> AudiencePlan:
    """Fill ``database`` with ``profiles`` generated profiles subscribed to ``resource``.

    ``messy``: phones written in the many ways people write them (email addresses with
    their domain in any case); otherwise in E.164 (lower case), as after an import.
    ``channel``: ``email`` gives each profile an email address, subscribed to the email
    resource ``resource``; its malformed addresses are refused by the import (``rejected``:
    no profile), its suppressed ones are on the global list by address or by domain.
    Imported ``chunk`` profiles at a time, so memory stays small. Nobody else may add
    profiles to the database meanwhile: the store picks the new profiles' ids and
    ``ImportResult`` does not say them, so the unsubscribed ones are found again by
    phone (or, in a database that had profiles, and for email, read back after the last
    one).
    """
    rng = random.Random(seed)
    email = channel == "email"
    if email:
        fmt = _email_formats if messy else _email
    else:
        fmt = _formats if messy else (lambda national, rng: "+7" + national)
    database_id = await store.database_id(database, create=True)
    resource_id = await store.resource_id(resource)
    source = AudienceSource("list", database_id, channel=channel)
    after = await _last_profile_id(store, source, resource_id)
    fresh = after == 0
    counts = dict.fromkeys(
        ("unique", "duplicates", "unsubscribed", "no_subscription", "suppressed", "invalid"), 0
    )
    uniques = array("q")  # national numbers of the profiles that will be messaged
    base = 9_000_000_000 + rng.randrange(0, 10_000) * 10_000
    for start in range(0, profiles, chunk):
        records: list[ImportRecord] = []
        unsubscribed: list[str] = []  # their addresses: no other generated one is alike
        suppressed: list[str] = []
        domains: list[str] = []
        for i in range(start, min(start + chunk, profiles)):
            roll = rng.random()
            address: str | None
            if roll < 0.04 and uniques:
                address = fmt(str(uniques[rng.randrange(len(uniques))]), rng)
                counts["duplicates"] += 1
            elif roll < 0.07:
                address = fmt(str(base + i), rng)
                unsubscribed.append(address)
                counts["unsubscribed"] += 1
            elif roll < 0.08:
                address = None
                counts["no_subscription"] += 1
            elif roll < 0.10:
                if not email:
                    address = fmt(str(base + i), rng)
                    suppressed.append(f"+7{base + i}")
                elif i % 4:
                    address = fmt(str(base + i), rng)
                    suppressed.append(_email(str(base + i), rng))
                else:  # the whole domain is suppressed
                    address = f"{_local(base + i)}@{_GONE_DOMAIN}"
                    domains = [_GONE_DOMAIN]
                counts["suppressed"] += 1
            elif roll < 0.12:
                address = rng.choice(_MALFORMED_EMAILS if email else _MALFORMED)
                counts["invalid"] += 1
            else:
                address = fmt(str(base + i), rng)
                uniques.append(base + i)
                counts["unique"] += 1
            fields: dict[str, Any] = {
                "_fname": rng.choice(_FIRST), "_city": rng.choice(_CITIES),
                "_sex": rng.choice("mf"), "loyalty": rng.randrange(0, 5000),
                "interests": rng.sample(_INTERESTS, rng.randrange(0, 3)),
            }
            if address is not None and not email:
                fields["phones"] = [address]
            # no key: every record is a new profile, its address subscribed to the resource
            records.append(ImportRecord(None, None, address, fields) if email else
                           ImportRecord(None, address, None, fields))
        result = await store.import_profiles(database_id, records, matching=channel_key(channel),
                                             resource_id=resource_id, mode="add",
                                             channel=channel)
        expected = len(records) - (len(result.rejected) if email else 0)
        if result.added != expected:
            raise StoreError(f"database {database!r}: {result.added} of {len(records)}"
                             " generated profiles added")
        if fresh and not email:  # every profile with one of those phones is this call's
            ids = list((await store.find_profiles(database_id, "phone",
                                                  unsubscribed)).values())
        else:  # older ones may share an address (an email's, as written, is not its
            # subscription's): read the chunk's profiles back
            rows = await store.audience_chunk(source, resource_id, after, result.added)
            if len(rows) != result.added:
                raise StoreError(f"database {database!r} changed while the demo filled it")
            after = rows[-1][0]
            wanted = {normalise_email(a) for a in unsubscribed} if email else set(unsubscribed)
            ids = [pid for pid, _, phone, _ in rows if phone in wanted]
        await store.set_subscription_status(resource_id, ids, "unsubscribed")
        await store.add_suppressions("global", "email" if email else "phone", suppressed)
        if domains:
            await store.add_suppressions("global", "domain", domains)
    plan = AudiencePlan(profiles=profiles, **counts)
    return msgspec.structs.replace(plan, rejected=plan.invalid) if email else plan


def channel_key(channel: Channel) -> str:
    """The profile key an import of ``channel``'s addresses matches on."""
    return "email" if channel == "email" else "phone"


def write_workspace(directory: Path, *, main_url: str, backup_url: str,
                    database: str = "herald.db", tracking: str = "127.0.0.1:8080",
                    secret: str = "demo-receipt-secret") -> Path:
    """Write the demo config and template into ``directory``; return the config path.
    ``database``: the store's URL (default: a SQLite file in ``directory``); ``tracking``:
    the tracking domain (where the demo serves the API); ``secret``: the gateways'
    receipt secret."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "herald.toml"
    config.write_text(DEMO_CONFIG.format(main_url=main_url, backup_url=backup_url,
                                         database=json.dumps(database), tracking=tracking,
                                         secret=secret), encoding="utf-8")
    (directory / "template.txt").write_text(DEMO_TEMPLATE, encoding="utf-8")
    return config


#: The link of ``DEMO_TEMPLATE``: every text carries it as a short link.
DEMO_LINK = "https://shop.example/new?utm_source=sms"
#: A link-preview bot's user agent: redirected, never counted as a click.
PREVIEW_BOT = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"


class TrackingDemo(msgspec.Struct, frozen=True):
    """What ``exercise_tracking`` did through the real routes."""

    clicks: int
    clickers: int
    bot_clicks: int
    stop_phone: str | None


async def exercise_tracking(
    store: Store, run_id: int, base: str, *, people: int = 12, twice: int = 3,
    seed: int = 1,
) -> TrackingDemo:
    """Click the short link of ``people`` sent messages through ``base`` (the served
    tracking domain): ``twice`` of them click again, and a link-preview bot fetches one.
    Each answer must be a 302 to ``DEMO_LINK``. Returns what was done."""
    import httpx

    from engine.core.codes import Codec

    rng = random.Random(seed)
    links = [row for row in await store.ensure_links(run_id, [], 0) if row.url == DEMO_LINK]
    if not links:
        return TrackingDemo(0, 0, 0, None)
    codec = Codec(await store.tracking_secret(), b"link")
    sent = [r for r in await store.recipient_rows(run_id)
            if r.state in ("sent", "delivered", "undelivered")]
    chosen = rng.sample(sent, min(people, len(sent)))
    clicks = bots = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for i, recipient in enumerate(chosen):
            url = f"/{codec.encode(links[0].id, recipient.seq)}"
            for _ in range(2 if i < twice else 1):
                answer = await client.get(url, headers={"user-agent": "Mozilla/5.0 (demo)"})
                if answer.status_code != 302 or answer.headers.get("location") != DEMO_LINK:
                    raise StoreError(f"short link {base}{url} answered {answer.status_code},"
                                     f" not a 302 to {DEMO_LINK}")
                clicks += 1
        if chosen:
            await client.get(f"/{codec.encode(links[0].id, chosen[0].seq)}",
                             headers={"user-agent": PREVIEW_BOT})
            bots += 1
    # a STOP reply matches subscriptions by their phone in E.164, as imports store it; the
    # generator wrote most phones as people write them, so take one it wrote in E.164
    news = await store.resource_id("news")
    stop = None
    for recipient in reversed(sent):
        if await store.find_subscriptions(news, phone=recipient.phone, limit=1):
            stop = recipient.phone
            break
    return TrackingDemo(clicks, len(chosen), bots, stop)


# -- the email demo ----------------------------------------------------------------------

DEMO_EMAIL_CONFIG = """\
# A Herald workspace made by `herald demo --channel email`. See config/herald.toml for
# every key. The smtp gateway is the SMTP sink (aiosmtpd) that `herald demo` ran on
# loopback while it sent; point host and port at a relay or an MTA to send again.
[engine]
database = {database}

[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"              # plaintext on loopback only: "starttls" or "tls" elsewhere
connections = 4                # pipelined sessions, several messages each
dkim_selector = "{selector}"   # its public key: TXT {selector}._domainkey.{domain}
dkim_key = "dkim.pem"          # made by the demo (RSA 2048)

[senders.news]
gateway = "mail"
from = "Herald Demo <news@{domain}>"
reply_to = "help@{domain}"
return_path = "bounces@bounces.{domain}"   # VERP: bounces+ID@... tells whose mail bounced
rate = 0

[virtual_senders.mail]
rules = [{{ senders = [{{ sender = "news" }}] }}]

[resources.letters]
channel = "email"
databases = ["customers"]
virtual_sender = "mail"
track_opens = true             # an open pixel in each message
list_unsubscribe = true        # List-Unsubscribe with one-click POST (RFC 8058)
inline_css = true              # <style> rules into style attributes, for mail clients

# The demo served the tracking domain on loopback: each link went out as a short link
# there, each message's pixel and unsubscribe link too.
[tracking]
domain = "{tracking}"
scheme = "http"
"""

#: The email demo's sending domain (DKIM ``d=``, the From address, Message-IDs).
DEMO_DOMAIN = "herald-demo.example"
DEMO_SELECTOR = "demo"
#: The link of ``DEMO_HTML``: every message carries it as a short link.
DEMO_EMAIL_LINK = "https://shop.example/new?utm_source=email"
DEMO_SUBJECT = "{lead._fname}, new arrivals in {lead._city} 🛍️✨"
DEMO_HTML = """\
<!doctype html>
<html><head><meta charset="utf-8">
<style>
  h1 { font: bold 22px sans-serif; color: #1a1a2e; }
  p.lead { font: 16px sans-serif; color: #333; }
  a.button { background: #e94560; color: #fff; padding: 10px 18px; text-decoration: none; }
</style></head>
<body>
<h1>Hi {lead._fname}!</h1>
<p class="lead">{if lead._city equal "Moscow"}Our Moscow flagship opens late on Saturday.\
{else}New arrivals in {lead._city} this week.{end}</p>
{if lead.interests}<p class="lead">Picked for you: \
{for item in lead.interests}{item}{if not loop.last}, {end}{end}.</p>{end}
<p><a class="button" href="https://shop.example/new?utm_source=email">See what is new</a></p>
<p style="font-size: 12px; color: #888">You get this as a subscriber of Herald Demo News.
<a href="{unsubscribe}">Unsubscribe</a></p>
</body></html>
"""


def dkim_key(directory: Path) -> bytes:
    """Write a fresh 2048-bit RSA key to ``directory/dkim.pem``; return its DNS TXT record
    (what ``{selector}._domainkey.{domain}`` would publish)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "dkim.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def write_email_workspace(directory: Path, *, port: int, database: str = "herald.db",
                          tracking: str = "127.0.0.1:8080") -> tuple[Path, bytes]:
    """Write the email demo's config, DKIM key, subject and HTML template into
    ``directory``; return the config path and the key's DNS TXT record. ``port``: the
    SMTP sink's on loopback."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "herald.toml"
    config.write_text(DEMO_EMAIL_CONFIG.format(
        database=json.dumps(database), port=port, selector=DEMO_SELECTOR,
        domain=DEMO_DOMAIN, tracking=tracking), encoding="utf-8")
    (directory / "template.html").write_text(DEMO_HTML, encoding="utf-8")
    (directory / "subject.txt").write_text(DEMO_SUBJECT + "\n", encoding="utf-8")
    return config, dkim_key(directory)


class MailSink:
    """An SMTP sink on loopback (aiosmtpd, PIPELINING and SMTPUTF8 offered), in a thread
    with its own asyncio loop: it counts the messages it takes and keeps a random sample
    of ``keep`` of them (reservoir sampling, ``seed``), so a big mailing fits in memory.
    Start it with ``with MailSink() as sink:``; ``sink.port`` is where it listens."""

    def __init__(self, *, keep: int = 2000, seed: int = 1) -> None:
        import threading

        self.keep = keep
        self.taken = 0
        self.sample: list[bytes] = []
        self.port = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: Any = None
        self._thread: Any = None
        self._server: Any = None

    def take(self, content: bytes) -> None:
        with self._lock:
            self.taken += 1
            if len(self.sample) < self.keep:
                self.sample.append(content)
            elif (k := self._rng.randrange(self.taken)) < self.keep:
                self.sample[k] = content

    def __enter__(self) -> MailSink:
        import asyncio
        import threading

        try:
            from aiosmtpd.smtp import SMTP
        except ImportError:
            raise StoreError("herald demo --channel email runs an SMTP sink with aiosmtpd:"
                             " pip install aiosmtpd") from None
        sink = self

        class Handler:
            async def handle_EHLO(self, server: Any, session: Any, envelope: Any,
                                  hostname: str, responses: list[str]) -> list[str]:
                session.host_name = hostname
                responses.insert(-1, "250-PIPELINING")  # aiosmtpd reads pipelined commands
                return responses

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.take(envelope.original_content or b"")
                return "250 2.0.0 Ok: queued"

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="herald-demo-smtp-sink")
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._loop.create_server(
            lambda: SMTP(Handler(), hostname="sink.herald-demo.example", decode_data=False,
                         enable_SMTPUTF8=True), "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class SinkCheck(msgspec.Struct, frozen=True):
    """What the messages a ``MailSink`` kept are: how many were looked at, how many have a
    DKIM signature that verifies, a text and an HTML part, the demo's link as a short link
    of the tracking domain, an open pixel and a one-click ``List-Unsubscribe``."""

    taken: int
    checked: int
    dkim_ok: int
    both_parts: int
    short_links: int
    pixels: int
    one_click: int


_HREF = re.compile(r'href="([^"]+)"')
_PIXEL = re.compile(r'<img src="([^"]+/o/[^"]+)"')


def check_sample(sink: MailSink, txt: bytes, tracking: str) -> SinkCheck:
    """Look at every message ``sink`` kept (dkimpy verifies each signature against the
    public key ``txt``, as a receiving MTA would look it up in DNS)."""
    import dkim

    record = f"{DEMO_SELECTOR}._domainkey.{DEMO_DOMAIN}.".encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt if name == record else b""

    counts = dict.fromkeys(("dkim_ok", "both_parts", "short_links", "pixels", "one_click"), 0)
    base = f"http://{tracking}/"
    for raw in sink.sample:
        counts["dkim_ok"] += bool(dkim.verify(raw, dnsfunc=dns))
        msg = _parse(raw)
        html, text = msg.get_body(("html",)), msg.get_body(("plain",))
        if html is None or text is None:
            continue
        counts["both_parts"] += 1
        body = html.get_content()
        links = _HREF.findall(body)
        counts["short_links"] += bool(links) and all(u.startswith(base) for u in links) \
            and DEMO_EMAIL_LINK not in body
        counts["pixels"] += len(_PIXEL.findall(body)) == 1
        counts["one_click"] += (msg.get("List-Unsubscribe-Post")
                                == "List-Unsubscribe=One-Click")
    return SinkCheck(taken=sink.taken, checked=len(sink.sample), **counts)


def _parse(raw: bytes) -> Any:
    import email
    import email.policy

    return email.message_from_bytes(raw, policy=email.policy.default)


class EmailTrackingDemo(msgspec.Struct, frozen=True):
    """What ``exercise_email_tracking`` did through the real routes with the messages a
    sink kept: pixels fetched (opens), short links clicked, a one-click unsubscribe."""

    opens: int
    openers: int
    clicks: int
    clickers: int
    unsubscribed: str | None


async def exercise_email_tracking(
    store: Store, sink: MailSink, *, people: int = 12, twice: int = 3, seed: int = 1,
) -> EmailTrackingDemo:
    """As mail clients and readers would: ``people`` of the kept messages are opened (their
    pixel fetched; ``twice`` of them opened again) and their link clicked (each a 302 to
    ``DEMO_EMAIL_LINK``); the last one's ``List-Unsubscribe`` gets RFC 8058's one-click
    POST, which must unsubscribe its address (the subscription's status says)."""
    import httpx

    rng = random.Random(seed)
    chosen = [_parse(raw) for raw in rng.sample(sink.sample, min(people, len(sink.sample)))]
    opens = clicks = 0
    agent = {"user-agent": "Mozilla/5.0 (demo mail client)"}
    async with httpx.AsyncClient(timeout=10) as client:
        for i, msg in enumerate(chosen):
            body = msg.get_body(("html",)).get_content()
            pixel, links = _PIXEL.findall(body), _HREF.findall(body)
            for _ in range(2 if i < twice else 1):
                if pixel:
                    await client.get(pixel[0], headers=agent)
                    opens += 1
            if links:
                answer = await client.get(links[0], headers=agent)
                if answer.status_code != 302 or answer.headers.get("location") != \
                        DEMO_EMAIL_LINK:
                    raise StoreError(f"short link {links[0]} answered {answer.status_code},"
                                     f" not a 302 to {DEMO_EMAIL_LINK}")
                clicks += 1
        gone = None
        if chosen:
            msg = chosen[-1]
            url = str(msg["List-Unsubscribe"]).strip("<>")
            answer = await client.post(url, data={"List-Unsubscribe": "One-Click"})
            address = str(msg["To"])
            letters = await store.resource_id("letters")
            subs = await store.find_subscriptions(letters, phone=address, limit=1)
            if answer.status_code == 200 and subs and subs[0].status != "subscribed":
                gone = address
    return EmailTrackingDemo(opens, len(chosen), clicks, len(chosen), gone)
